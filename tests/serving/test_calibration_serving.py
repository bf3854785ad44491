"""A model packaged calibrated is served calibrated: each known listener's list is the calibrated choice
from the model's best unlistened items, closer to their own genre mix than the same model's plain list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys import registry
from recsys.offline.calibration import Calibrated
from recsys.serving import logic
from recsys.serving.schemas import NewListenerRequest, RecommendRequest
from recsys.serving.state import ServingState
from tests.helpers import Project

SETTING = Calibrated(strength=0.8, candidates=30, genres=4, tier_weight=0.0)


@pytest.fixture(scope="module")
def calibrated(project: Project, tmp_path_factory: pytest.TempPathFactory) -> ServingState:
    home = tmp_path_factory.mktemp("calibrated-home")
    tag = registry.save_candidate(
        project.models, project.features, project.split,
        {"ndcg@10": 0.5, "calibration": SETTING.metadata()},
        params_dict={"seed": 0}, dvc_lock_hash="unknown", git_commit="unknown",
        prepared_dir=project.prepared, top_tags=3, home=home,
    )  # fmt: skip
    return ServingState(registry.load_artifact(tag, home=home))


@pytest.fixture(scope="module")
def plain(champion_home: tuple[Path, str]) -> ServingState:
    return ServingState(registry.load_artifact("champion", home=champion_home[0]))


def test_known_listeners_get_the_calibrated_choice_closer_to_their_mix(
    calibrated: ServingState, plain: ServingState
) -> None:
    assert calibrated.calibration == SETTING and plain.calibration is None
    closer = []
    for user_id, user in sorted(calibrated.user_index.items())[:20]:
        request = RecommendRequest(user_id=user_id, k=5)
        ids = [item["item_id"] for item in logic.recommend(calibrated, request, frozenset())["items"]]
        top, scores = calibrated.rank_known(user, SETTING.candidates)
        expected = calibrated.calibrated(calibrated.known_items(user), top, scores, 5)[0]
        assert ids == [calibrated.item_ids[i] for i in expected.tolist()]
        as_trained = [item["item_id"] for item in logic.recommend(plain, request, frozenset())["items"]]
        target = calibrated._categories.target(calibrated.known_items(user))  # type: ignore[union-attr]
        mix = calibrated._categories.miscalibration  # type: ignore[union-attr]
        indices = calibrated.indices_of
        closer.append(mix(target, indices(ids)) <= mix(target, indices(as_trained)) + 1e-9)
    assert np.mean(closer) >= 0.9  # greedy: never worse at the first place, nearly always at five


def test_new_listeners_are_calibrated_to_their_favourites(calibrated: ServingState) -> None:
    favourites = [calibrated.names[i] for i in range(3)]
    answer = logic.new_listener(calibrated, NewListenerRequest(favourites=favourites, k=5), frozenset())
    assert len(answer["items"]) == 5 and not {i["name"] for i in answer["items"]} & set(favourites)
