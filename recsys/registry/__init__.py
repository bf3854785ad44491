"""Registry: the BentoML model store as the project's model registry.

Modules
-------
artifact
    What one stored model holds (``ServingArtifact``), how it is written and read back, checksums.
provenance
    ``dvc_lock_hash``, ``git_commit``, ``data_version``: where a model came from.
packaging
    ``save_candidate`` (explicit folders), ``package_project`` (the training flow's),
    ``package_model`` (a model and split in memory: the retraining flow's).
store
    Lifecycle in the store: ``list_models``, ``get_model``, ``champion``, ``promote``, ``rollback``,
    ``all_versions``, ``delete_versions``, ``load_artifact``.
comparison
    The champion measured on a run's test split, so challenger and champion meet on the same data.
exchange
    The model exchange: promoted models exported to a folder every host mounts, imported by replicas.
publishing
    A promotion made known to every host: exported to the exchange, its tag announced.

``from recsys import registry`` gives the public face below; this package imports BentoML.
"""

from recsys.errors import NoChampionError, NothingToRollBackError, RegistryError
from recsys.registry.artifact import (
    ARTIFACT_FORMAT,
    ServingArtifact,
    item_catalogue,
    read_feedback_record,
    read_user_ids,
    top_item_tags,
)
from recsys.registry.packaging import package_model, package_project, save_candidate
from recsys.registry.provenance import data_version, dvc_lock_hash, git_commit
from recsys.registry.store import (
    CANDIDATE,
    CHAMPION,
    DATASET_ENV,
    DEFAULT_DATASET,
    HOME_ENV,
    MODEL_NAME,
    RETIRED,
    ROLLED_BACK,
    STAGES,
    ModelInfo,
    all_versions,
    artifact_from_model,
    bentoml_home,
    champion,
    delete_versions,
    get_model,
    list_models,
    load_artifact,
    model_name,
    promote,
    rollback,
)

__all__ = [
    "ARTIFACT_FORMAT",
    "CANDIDATE",
    "CHAMPION",
    "DATASET_ENV",
    "DEFAULT_DATASET",
    "HOME_ENV",
    "MODEL_NAME",
    "RETIRED",
    "ROLLED_BACK",
    "STAGES",
    "ModelInfo",
    "NoChampionError",
    "NothingToRollBackError",
    "RegistryError",
    "ServingArtifact",
    "all_versions",
    "artifact_from_model",
    "bentoml_home",
    "champion",
    "data_version",
    "delete_versions",
    "dvc_lock_hash",
    "get_model",
    "git_commit",
    "item_catalogue",
    "list_models",
    "load_artifact",
    "model_name",
    "package_model",
    "package_project",
    "promote",
    "read_feedback_record",
    "read_user_ids",
    "rollback",
    "save_candidate",
    "top_item_tags",
]
