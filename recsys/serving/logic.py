"""What each endpoint answers, as pure functions of a :class:`ServingState` and a validated request."""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import Any

import numpy as np

from recsys.serving import exploration
from recsys.serving.exploration import Explorer
from recsys.serving.schemas import NewListenerRequest, RecommendRequest, SearchQuery, SimilarRequest
from recsys.serving.session import EMPTY, NO_EVENTS, Session, SessionEvent
from recsys.serving.state import ServingState, UnknownFilterError

_NONE = np.empty(0, dtype=np.int64)
CANDIDATES_PER_SLOT = 3
"""A new listener's list is picked from three candidates per place."""


class FieldError(ValueError):
    """A request that is well-formed but names something the model does not have (-> 4xx)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field, self.status = field, status


def recommend(
    state: ServingState,
    request: RecommendRequest,
    disliked: Set[str],
    events: Sequence[SessionEvent] = NO_EVENTS,
    explorer: Explorer | None = None,
) -> dict[str, Any]:
    """Top-k for a known listener, or a flagged popularity list (cold start) for an unknown one.

    Disliked items are never returned; listened items are skipped unless ``exclude_listened`` is false. A
    known listener's ``events`` since the model was packaged move their vector (:mod:`recsys.serving.session`;
    ``request.session`` false: the list as trained); the answer's ``session_events`` says how many counted.
    With an ``explorer`` whose share is positive, a known listener's list may explore
    (:mod:`recsys.serving.exploration`) and every item carries its ``propensity``.
    """
    session = state.session(events) if request.session else EMPTY
    params = explorer.settings(state.explore_params) if explorer is not None else None
    pool_depth = params.pool_depth if params is not None and params.share > 0 else 0
    user, indices, scores, deeper = _ranked(state, request, disliked, session, pool_depth)
    if user is None or not pool_depth or explorer is None or params is None:
        return answer_for(state, request.user_id, user, indices, scores, session)
    candidates, candidate_scores = deeper[0][:pool_depth], deeper[1][:pool_depth]
    fresh = state.long_tail[candidates] & ~np.isin(
        candidates, np.concatenate([indices, state.known_items(user)])
    )
    explored = explorer.explore(params, indices, scores, candidates[fresh], candidate_scores[fresh])
    answer = answer_for(state, request.user_id, user, explored.indices, explored.scores, session)
    return answer | {"items": exploration.mark(answer["items"], explored)}


def ranked(
    state: ServingState, request: RecommendRequest, disliked: Set[str], session: Session = EMPTY
) -> tuple[int | None, np.ndarray, np.ndarray]:
    """The listener's row (None: unknown, so a popularity list) and the ranked item indices and scores."""
    user, indices, scores, _ = _ranked(state, request, disliked, session, 0)
    return user, indices, scores


def _ranked(
    state: ServingState, request: RecommendRequest, disliked: Set[str], session: Session, pool_depth: int
) -> tuple[int | None, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """:func:`ranked`, and the model's best ``pool_depth`` (at least the list's candidates) before any
    calibration: where an explored place draws from."""
    allowed = _allowed(state, request.genre, request.tag)
    exclude = np.concatenate([state.twins, state.indices_of(disliked)]) if disliked else state.twins
    user = state.row_of(request.user_id)
    if user is None:
        return None, state.popular(request.k, exclude, allowed), np.empty(0), (_NONE, _NONE)
    shown = state.depth(request.k)
    depth = max(shown, pool_depth)
    if session.events and request.exclude_listened:  # the listener's vector has moved since training
        indices, scores = state.rank_session(user, session, depth, exclude, allowed)
    elif session.events:  # listened items allowed: the session's scores, uncached
        scores_now = state.session_scores(user, session)
        indices, scores = state.rank_scores(
            scores_now, depth, np.concatenate([exclude, session.exclude]), allowed
        )
    elif request.exclude_listened:
        indices, scores = state.rank_known(user, depth, exclude, allowed)
    else:
        indices, scores = state.rank_scores(state.known_scores(user), depth, exclude, allowed)
    known = state.known_items(user)
    chosen, chosen_scores = state.calibrated(known, indices[:shown], scores[:shown], request.k)
    return user, chosen, chosen_scores, (indices, scores)


def answer_for(
    state: ServingState,
    user_id: str | None,
    user: int | None,
    indices: np.ndarray,
    scores: np.ndarray,
    session: Session = EMPTY,
) -> dict[str, Any]:
    """The answer for ranked items: with reasons for a known listener (their session's likes among what
    explains an item), popularity entries for an unknown."""
    if user is None:
        return _answer(state, user_id, state.popular_items(indices), cold_start=True)
    liked = state.known_items(user)
    if session.events:
        liked = np.union1d(liked, session.liked)
    items = state.items(indices, scores, state.user_profile(user), liked)
    return _answer(state, user_id, items, cold_start=False) | {"session_events": session.events}


def new_listener(
    state: ServingState,
    request: NewListenerRequest,
    disliked: Set[str],
    events: Sequence[SessionEvent] = NO_EVENTS,
) -> dict[str, Any]:
    """Top-k for a listener described by favourite artists, folded into one user vector.

    The listener's stored ``events`` (``request.user_id``'s, since the model was packaged) count whether or
    not the favourites repeat them: liked and played items join the favourites, skips and dislikes move the
    folded vector away (:mod:`recsys.serving.session`); the answer's ``session_events`` says how many.

    Raises
    ------
    FieldError
        When no favourite names or ids a known artist.
    """
    resolved = {name: state.resolve(name) for name in request.favourites}
    session = state.session(events) if request.session else EMPTY
    chosen = {i for i in resolved.values() if i is not None}
    favourites = np.array(sorted(chosen | set(session.liked.tolist())), dtype=np.int64)
    unresolved = [name for name, index in resolved.items() if index is None]
    if favourites.size == 0:
        raise FieldError("favourites", f"no favourite matches a known artist name or id: {unresolved[:5]}")
    allowed = _allowed(state, request.genre, request.tag)
    vector = state.adapted(state.fold_in(favourites), session.negative(), len(favourites))
    excluded = [favourites, state.twins, state.indices_of(request.exclude), state.indices_of(disliked)]
    excluded.append(session.exclude)
    # More candidates than shown, so that every favourite can explain one of the k (state.every_favourite).
    shown = request.k * CANDIDATES_PER_SLOT
    # The hybrid's own list: mitigated as packaged only when the hybrid is the served model.
    indices, scores = state.rank(vector, state.depth(shown), np.concatenate(excluded), allowed)
    indices, scores = state.calibrated(favourites, indices, scores, shown, hybrid=True)
    indices, scores, anchors = state.every_favourite(indices, scores, favourites, request.k)
    items = state.items(indices, scores, state.tag_profile(favourites), favourites, anchors)
    answer = _answer(state, request.user_id, items, cold_start=False)
    answer["unresolved"] = unresolved
    answer["session_events"] = session.events
    return answer


def similar(state: ServingState, request: SimilarRequest) -> dict[str, Any]:
    """The artists nearest to one artist by cosine similarity of item embeddings.

    Raises
    ------
    FieldError
        404 when the item id or name is unknown.
    """
    field, key = ("item_id", request.item_id) if request.item_id is not None else ("name", request.name)
    assert key is not None  # the request model guarantees exactly one
    item = state.item_index.get(key) if field == "item_id" else state.names_index.exact(key)
    if item is None:
        raise FieldError(field, f"no artist with {field} {key!r}; use /search to find one", status=404)
    indices, scores = state.similar(item, request.k)
    return {
        "item_id": state.item_ids[item],
        "name": state.names[item],
        "items": state.items(indices, scores, state.tag_profile([item])),
        "model_version": state.version,
    }


def search(state: ServingState, query: SearchQuery) -> dict[str, Any]:
    """Artists whose names match ``query.q``: exact, prefix, substring, then fuzzy."""
    return search_answer(state, state.names_index.search(query.q, query.limit))


def search_answer(state: ServingState, hits: list[tuple[int, str]]) -> dict[str, Any]:
    """The answer for search hits ``(item index, match kind)``."""
    items = [{"item_id": state.item_ids[i], "name": state.names[i], "match": how} for i, how in hits]
    return {"items": items, "model_version": state.version}


def _allowed(state: ServingState, genre: str | None, tag: str | None) -> np.ndarray | None:
    try:
        return state.allowed(genre, tag)
    except UnknownFilterError as err:
        raise FieldError(err.field, str(err)) from err


def _answer(
    state: ServingState, user_id: str | None, items: list[dict[str, Any]], cold_start: bool
) -> dict[str, Any]:
    return {"user_id": user_id, "items": items, "cold_start": cold_start, "model_version": state.version}
