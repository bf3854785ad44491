"""A champion packaged before the layout change (commit ff6b1d5, artifact format 1) still loads and serves.

``legacy_store/`` is a BentoML home holding the tiny clustered champion that commit's code packaged;
nothing in it names a module, so moving code must not break it. The store is copied first: a load takes
the registry's lock file, and the fixture stays read-only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from recsys import registry
from recsys.serving import logic
from recsys.serving.schemas import RecommendRequest
from recsys.serving.state import ServingState

LEGACY = Path(__file__).parent / "legacy_store"


def test_a_champion_packaged_before_the_move_loads_and_recommends(tmp_path: Path) -> None:
    home = tmp_path / "bentoml"
    shutil.copytree(LEGACY, home)

    artifact = registry.load_artifact("champion", home=home)  # sha256 of every file checked
    state = ServingState(artifact)
    answer = logic.recommend(state, RecommendRequest(user_id=artifact.user_ids[0], k=3), set())

    assert artifact.metadata["format"] == registry.ARTIFACT_FORMAT == 1
    assert (len(artifact.user_ids), len(artifact.item_ids)) == (40, 26)
    items = answer["items"]
    assert len(items) == 3 and all(item["item_id"] in artifact.item_index for item in items)
    assert all(item["reason"] for item in items)
