"""Request and response bodies of the HTTP API, with the bounds every field must respect.

Requests are parsed with ``Model.model_validate_json`` (unknown fields are rejected); responses are
built as plain dicts for speed and documented (and tested) against the response models below.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from recsys.feedback.events import MAX_ID_LENGTH, MAX_REASON_LENGTH, FeedbackEvent

MAX_K = 100
MAX_FAVOURITES = 50
MAX_EXCLUDE = 500
MAX_EVENTS = 500
MAX_QUERY = 100
MAX_SEARCH_LIMIT = 50
MAX_FILTER = 64

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH)]
NameOrId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
FilterValue = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_FILTER)]
K = Annotated[int, Field(ge=1, le=MAX_K, description="Number of items to return.")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SESSION_HELP = (
    "Adapt the list to the listener's feedback stored since the model was trained (likes and plays pull "
    "toward, skips and dislikes away; items with feedback leave the list). False: the model's list as "
    "trained."
)


class RecommendRequest(_Request):
    """``POST /recommend``: recommendations for a listener, known to the model or not (cold start)."""

    user_id: Id
    k: K = 10
    exclude_listened: bool = Field(True, description="Never return artists the user already listened to.")
    genre: FilterValue | None = Field(None, description="Only artists of this Spotify genre, e.g. 'rock'.")
    tag: FilterValue | None = Field(None, description="Only artists with this Last.fm tag, e.g. 'indie'.")
    session: bool = Field(True, description=SESSION_HELP)


class NewListenerRequest(_Request):
    """``POST /recommend/new-listener``: recommendations from a few favourite artists (names or ids)."""

    favourites: list[NameOrId] = Field(min_length=1, max_length=MAX_FAVOURITES)
    k: K = 10
    user_id: Id | None = Field(
        None,
        description="When given, the artists this listener disliked are excluded and their feedback since "
        "the model was trained counts (``session``).",
    )
    exclude: list[Id] = Field(default_factory=list, max_length=MAX_EXCLUDE, description="Item ids to skip.")
    genre: FilterValue | None = None
    tag: FilterValue | None = None
    session: bool = Field(True, description=SESSION_HELP)


class SimilarRequest(_Request):
    """``POST /similar``: the artists nearest to one artist (by ``item_id`` or exact ``name``)."""

    item_id: Id | None = None
    name: NameOrId | None = None
    k: K = 10

    @model_validator(mode="after")
    def _one_key(self) -> SimilarRequest:
        if (self.item_id is None) == (self.name is None):
            raise ValueError("give exactly one of item_id or name")
        return self


class SearchQuery(_Request):
    """``GET /search?q=...&limit=...``: artists by name (prefix, substring, then fuzzy)."""

    q: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUERY)]
    limit: int = Field(10, ge=1, le=MAX_SEARCH_LIMIT)


class FeedbackRequest(_Request):
    """``POST /feedback``: events stored durably before the answer; retries are idempotent by event_id."""

    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_EVENTS)


class RatingRequest(_Request):
    """``POST /ratings``: a listener's answer to "How good are these recommendations?" (never required)."""

    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="The listener (the page's id).")
    rating: int = Field(ge=1, le=5, description="1 (poor) to 5 (great).")
    model_version: str | None = Field(None, max_length=200, description="The model whose list was rated.")


class RatingResponse(BaseModel):
    """Answer of ``POST /ratings``."""

    stored: bool


NOT_BLANK = r"\S"
"""JSON-schema pattern (unanchored): at least one character that is not white space."""


def _not_blank(value: str) -> str:
    # Python's notion of white space is wider than the schema pattern's; the store uses Python's.
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class UserPath(_Request):
    """Path of ``DELETE /users/{user_id}/feedback``: the raw id, matched exactly as the events store it."""

    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=NOT_BLANK)

    _check_user = field_validator("user_id")(_not_blank)


class DeleteQuery(_Request):
    """Query of ``DELETE /users/{user_id}/feedback``: why, stored verbatim in the audit log."""

    reason: str = Field(
        "erasure request",
        min_length=1,
        max_length=MAX_REASON_LENGTH,
        pattern=NOT_BLANK,
        description="Why the feedback is erased; stored verbatim, so it must not hold personal data.",
    )

    _check_reason = field_validator("reason")(_not_blank)


class RecommendedItem(BaseModel):
    """One recommended artist and why."""

    item_id: str
    name: str
    score: float
    reason: str
    model: Literal["champion", "challenger"] | None = Field(
        None,
        description="In an interleaving experiment, the model that drafted this item (send it as the "
        "feedback's arm).",
    )
    propensity: float | None = Field(
        None,
        ge=0,
        le=1,
        description="The probability that this list shows this item to this listener now, when the service "
        "explores (logged for off-policy replay); absent when it does not.",
    )
    explored: bool | None = Field(
        None, description="True for an artist shown to explore (a less-known one the model would not show)."
    )


class RecommendResponse(BaseModel):
    """Answer of ``/recommend`` and ``/recommend/new-listener``."""

    user_id: str | None
    items: list[RecommendedItem]
    cold_start: bool
    model_version: str
    unresolved: list[str] = Field(default_factory=list, description="Favourites that matched no artist.")
    arm: Literal["champion", "challenger", "interleave"] | None = Field(
        None,
        description="The experiment arm that answered (A/B), or interleave; absent outside an experiment.",
    )
    challenger_version: str | None = Field(None, description="The challenger's model version (interleaving).")
    session_events: int = Field(
        0,
        ge=0,
        description="The listener's feedback events since the model was trained that shaped this list "
        "(0: the model's list as trained; absent for a cold-start list).",
    )


class ExperimentResponse(BaseModel):
    """Answer of ``GET`` and ``POST /admin/experiment``."""

    mode: str
    challenger: str | None
    share: float
    salt: str
    champion: str | None = Field(description="The champion's model version.")
    error: str | None = Field(None, description="Why the last announced experiment could not be loaded.")


class SimilarResponse(BaseModel):
    """Answer of ``/similar``."""

    item_id: str
    name: str
    items: list[RecommendedItem]
    model_version: str


class SearchHit(BaseModel):
    """One artist found by ``/search``."""

    item_id: str
    name: str
    match: str = Field(description="exact, prefix, substring or fuzzy")


class SearchResponse(BaseModel):
    """Answer of ``/search``."""

    items: list[SearchHit]
    model_version: str


class FeedbackResponse(BaseModel):
    """Answer of ``/feedback``."""

    inserted: int
    duplicates: int


class ReloadResponse(BaseModel):
    """Answer of ``/admin/reload``."""

    reloaded: bool
    model_version: str | None
    previous_version: str | None
    error: str | None = None


class DeletionResponse(BaseModel):
    """Answer of ``DELETE /users/{user_id}/feedback``."""

    deleted: int = Field(description="Feedback events removed from the store.")
    user_pseudonym: str = Field(description="The pseudonym the audit record is kept under.")


class StoredEvent(BaseModel):
    """One stored feedback event of a listener."""

    event_id: str
    item_id: str
    name: str | None = Field(description="The item's name in the served catalogue (None if not in it).")
    event: str
    timestamp: str = Field(description="When it happened (ISO 8601, UTC).")


class UserFeedbackResponse(BaseModel):
    """Answer of ``GET /users/{user_id}/feedback``: what the store holds about the listener."""

    user_id: str
    n_events: int
    events: list[StoredEvent] = Field(description="Newest first, at most 1,000.")
    ratings: list[dict[str, Any]] = Field(description="The listener's 1-5 ratings, newest first.")


class ModelInfoResponse(BaseModel):
    """Answer of ``GET /model``."""

    model_version: str
    served_model: Literal["lightfm_hybrid", "ranker"] = Field(
        description="What ranks known listeners: the hybrid, or the two-stage ranker packaged over it "
        "(new listeners and similar items always come from the hybrid)."
    )
    n_items: int
    item_kind: Literal["artist", "track"] = Field(description="What the catalogue holds: artists or songs.")
    metrics: dict[str, Any] = Field(description="Offline test metrics, measured at ``bias_strength``.")
    bias_strength: float = Field(ge=0, description="Popularity re-ranking strength of the served lists.")
    bias_strength_source: Literal["model", "RECSYS_BIAS_STRENGTH", "argument"] = Field(
        description="``model``: packaged with the model (chosen offline); else the environment's override."
    )
    calibration: dict[str, float] | None = Field(
        None,
        description="The calibrated re-ranking the lists are served with (each keeps the genre mix of the "
        "listener's own listening: ``strength``, ``candidates``, ``genres``, ``tier_weight``); null: none.",
    )


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: a message and, for invalid input, the offending fields."""

    error: str
    fields: list[dict[str, str]] = Field(default_factory=list)
