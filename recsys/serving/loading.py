"""Which stored models a service may load: its own data set's, never a revoked one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recsys import registry


@dataclass(frozen=True)
class ModelSource:
    """Where a worker loads models from, and which it must refuse.

    Attributes
    ----------
    home : Path
        The model store's home.
    dataset : str, optional
        The service's data set: a model of another one is refused (default: ``$RECSYS_DATASET``).
    revoked : callable
        The tags never to serve (they hold an erased listener's feedback), as the worker knows them now.
    """

    home: Path
    dataset: str | None = None
    revoked: Callable[[], frozenset[str]] = field(default=frozenset)

    def load(self, tag: str) -> registry.ServingArtifact:
        """The stored model ``tag`` (a tag, a version or ``champion``), once it may be served.

        Raises
        ------
        registry.RegistryError
            The tag is unknown, names another data set's model, or a revoked one.
        """
        artifact = registry.load_artifact(tag, home=self.home, dataset=self.dataset)
        expected = registry.model_name(self.dataset)
        if artifact.tag.split(":")[0] != expected:
            raise registry.RegistryError(
                f"{artifact.tag} is not a model of this service's data set ({expected}): refused"
            )
        if artifact.tag in self.revoked():
            raise registry.RegistryError(f"{artifact.tag} holds an erased listener's feedback: revoked")
        return artifact
