"""Recommenders behind one interface: LightFM (collaborative or hybrid), the baselines
(most popular, item-kNN, EASE, RP3beta, implicit ALS) and the two-stage ranker over their candidates.

Every model takes a ``(n_users, n_items)`` float32 CSR confidence matrix with contiguous indices,
scores training users densely (:meth:`Recommender.score`), ranks with :meth:`Recommender.recommend`
and saves to / loads from one ``.npz`` file (:func:`load_recommender` reads any of them).

Modules
-------
base
    The ``Recommender`` interface, input checks, single-file persistence, ``load_recommender``.
lightfm_model
    LightFM (WARP by default), collaborative or hybrid, and its seed ensemble.
baselines
    Most popular, item-kNN (cosine), EASE.
graph
    RP3beta: a popularity-damped three-step random walk.
als
    Implicit-feedback ALS through the ``implicit`` package.
scorer
    The one top-k: a dot product per item, a partial sort of the k best.
candidates
    The ranker's first stage: every generator's top items, the pairs' scale-free features, content neighbours.
ranker
    The two-stage ranker: LightGBM lambdarank over the candidates, learned on the validation part.
"""

from recsys.models.als import ALS
from recsys.models.base import NotFittedError, Recommender, load_recommender
from recsys.models.baselines import EASE, ItemKNN, MostPopular
from recsys.models.graph import RP3beta
from recsys.models.lightfm_model import LightFMRecommender
from recsys.models.ranker import TwoStageRanker
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
    "TwoStageRanker",
    "load_recommender",
    "top_k_from_scores",
]
