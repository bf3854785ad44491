"""Recommenders behind one interface: LightFM (collaborative or hybrid) and the baselines.

Every model takes a ``(n_users, n_items)`` float32 CSR confidence matrix with contiguous indices,
scores training users densely (:meth:`Recommender.score`), ranks with :meth:`Recommender.recommend`
and saves to / loads from one ``.npz`` file (:func:`load_recommender` reads any of them).
"""

from recsys.models.base import NotFittedError, Recommender, load_recommender
from recsys.models.baselines import EASE, ItemKNN, MostPopular
from recsys.models.lightfm_model import LightFMRecommender
from recsys.models.scorer import TopKScorer, top_k_from_scores

__all__ = [
    "EASE",
    "ItemKNN",
    "LightFMRecommender",
    "MostPopular",
    "NotFittedError",
    "Recommender",
    "TopKScorer",
    "load_recommender",
    "top_k_from_scores",
]
