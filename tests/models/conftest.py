"""Tiny hand-built listening data with an obvious answer, shared by the model tests.

Items 0-4 are "rock", 5-9 "pop". Users 0-7 listen to rock, 8-12 to pop. Every rock user but user 0
listens to item 4, and every pop user but user 8 to item 9: so item 4 is the obvious next artist
for user 0 (it is also the most popular one) and item 9 the obvious one for user 8.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import LightFMParams

ROCK_USER, ROCK_MISSING = 0, 4
POP_USER, POP_MISSING = 8, 9
N_USERS, N_ITEMS = 13, 10
LISTENS: dict[int, list[int]] = {
    0: [0, 1, 2, 3],
    1: [0, 1, 4],
    2: [1, 2, 4],
    3: [2, 3, 4],
    4: [0, 3, 4],
    5: [0, 1, 2, 4],
    6: [1, 3, 4],
    7: [0, 2, 3, 4],
    8: [5, 6, 7, 8],
    9: [5, 6, 9],
    10: [6, 7, 9],
    11: [7, 8, 9],
    12: [5, 8, 9],
}
GENRE = np.array([0] * 5 + [1] * 5)

TINY_LIGHTFM = LightFMParams.model_validate(
    {"no_components": 8, "epochs": 20, "learning_rate": 0.05, "max_sampled": 10, "eval_every": 5}
)
"""Small enough to train in milliseconds, large enough to learn the two clusters."""


def make_interactions() -> sp.csr_matrix:
    """The 13 x 10 confidence matrix: weights 1..5 so that weighted and binary views differ."""
    dense = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    for user, items in LISTENS.items():
        for position, item in enumerate(items):
            dense[user, item] = 1 + (user + 2 * position) % 5
    return sp.csr_matrix(dense)


def make_item_features(n_identity: int = N_ITEMS) -> sp.csr_matrix:
    """Identity block for the first ``n_identity`` items plus a genre one-hot, rows L1-normalised."""
    identity = sp.identity(N_ITEMS, dtype=np.float32, format="csr")[:, :n_identity]
    genre = sp.csr_matrix(
        (np.ones(N_ITEMS, dtype=np.float32), (np.arange(N_ITEMS), GENRE)), shape=(N_ITEMS, 2)
    )
    features = sp.hstack([identity, genre]).tocsr()
    row_sums = np.asarray(features.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / row_sums) @ features, dtype=np.float32)


@pytest.fixture
def interactions() -> sp.csr_matrix:
    return make_interactions()


@pytest.fixture
def item_features() -> sp.csr_matrix:
    return make_item_features()
