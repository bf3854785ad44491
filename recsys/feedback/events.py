"""The feedback event contract: what a listener's play, like, skip or dislike looks like, validated.

Every writer (the service, a batch import, the simulation) goes through :func:`parse_events`; the store
(:mod:`recsys.feedback.store`) keeps them and the retraining export reads them back as a frame with
:data:`FEEDBACK_COLUMNS` (:func:`events_to_frame`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from recsys.columns import EXPERIMENT_ARMS as ARMS
from recsys.columns import FEEDBACK_EVENTS, Col
from recsys.errors import RecsysError

MAX_ID_LENGTH = 128
MAX_REASON_LENGTH = 500
FEEDBACK_COLUMNS: tuple[str, ...] = (Col.USER, Col.ITEM, Col.EVENT, Col.TIMESTAMP, Col.EVENT_ID, Col.ARM)


class InvalidFeedbackError(RecsysError):
    """Feedback records violate the event contract; the message names each record and field."""


def utc_now() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


class FeedbackEvent(BaseModel):
    """One feedback event. ``event_id`` is chosen by the client so that retries are idempotent.

    Field names equal the ``Col`` constants (``Col.USER``, ``Col.ITEM``, ``Col.EVENT``, ``Col.TIMESTAMP``,
    ``Col.EVENT_ID``, ``Col.ARM``). The timestamp must carry a timezone; it defaults to now, kept in UTC.
    ``arm`` names the model whose list held the item during an experiment (the ``model`` of the answer's
    item; the service fills it in for A/B listeners when the client leaves it out).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    item_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    event: str = Field(json_schema_extra={"enum": list(FEEDBACK_EVENTS)})
    timestamp: AwareDatetime = Field(default_factory=utc_now)
    event_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    arm: str | None = Field(None, json_schema_extra={"enum": list(ARMS)})

    @field_validator(Col.USER, Col.ITEM, Col.EVENT_ID)
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator(Col.EVENT)
    @classmethod
    def _known_event(cls, value: str) -> str:
        if value not in FEEDBACK_EVENTS:
            raise ValueError(f"must be one of {', '.join(FEEDBACK_EVENTS)}; got {value!r}")
        return value

    @field_validator(Col.ARM)
    @classmethod
    def _known_arm(cls, value: str | None) -> str | None:
        if value is not None and value not in ARMS:
            raise ValueError(
                f"must be one of {', '.join(ARMS)} (the model whose list held the item); got {value!r}"
            )
        return value

    @field_validator(Col.TIMESTAMP)
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


def parse_events(records: Iterable[Mapping[str, Any]]) -> list[FeedbackEvent]:
    """Validate raw records (e.g. a request body) into events.

    Raises
    ------
    InvalidFeedbackError
        Naming every bad record by position and field, e.g. ``event 2, field 'event': ...``.
    """
    events, problems = [], []
    for position, record in enumerate(records):
        try:
            events.append(FeedbackEvent.model_validate(record))
        except ValidationError as err:
            problems += [f"event {position}, field {_field(e['loc'])!r}: {e['msg']}" for e in err.errors()]
    if problems:
        raise InvalidFeedbackError("invalid feedback: " + "; ".join(problems))
    return events


def events_to_frame(events: Sequence[FeedbackEvent]) -> pd.DataFrame:
    """Events as a DataFrame with :data:`FEEDBACK_COLUMNS`; timestamps are ``datetime64[ns, UTC]``."""
    frame = pd.DataFrame([e.model_dump() for e in events], columns=list(FEEDBACK_COLUMNS))
    frame[Col.TIMESTAMP] = pd.to_datetime(frame[Col.TIMESTAMP], utc=True)
    return frame


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(record)"
