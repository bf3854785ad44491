"""Recommenders behind one interface: LightFM (collaborative or hybrid) and the baselines
(most popular, item-kNN, EASE, RP3beta, implicit ALS).

Every model takes a ``(n_users, n_items)`` float32 CSR confidence matrix with contiguous indices,
scores training users densely (:meth:`Recommender.score`), ranks with :meth:`Recommender.recommend`
and saves to / loads from one ``.npz`` file (:func:`load_recommender` reads any of them).
"""

from recsys.models.als import ALS
from recsys.models.base import NotFittedError, Recommender, load_recommender
from recsys.models.baselines import EASE, ItemKNN, MostPopular
from recsys.models.graph import RP3beta
from recsys.models.lightfm_model import LightFMRecommender
from recsys.models.scorer import TopKScorer, top_k_from_scores

__all__ = [
    "ALS",
    "EASE",
    "ItemKNN",
    "LightFMRecommender",
    "MostPopular",
    "NotFittedError",
    "RP3beta",
    "Recommender",
    "TopKScorer",
    "load_recommender",
    "top_k_from_scores",
]
