"""Online experiments: which model a listener meets, and how two models share one list.

Three designs compare a challenger with the champion on live traffic:

- ``shadow``: the champion answers; the challenger ranks the same request and its list is logged, never
  shown (a dry run: latency, errors and how different its lists are, at no risk to listeners);
- ``ab``: a sticky share of listeners (``share``) meets the challenger: the arm is a salted hash of the
  user id (:func:`arm_of`), so a listener stays in one arm across requests, workers and restarts, and a new
  ``salt`` reshuffles everyone for the next experiment;
- ``interleave``: every listener gets one list drafted from both rankings (team-draft interleaving,
  :func:`team_draft`), each slot credited to the model that drafted it; a like or play of that item is a
  vote for its model.

Everything here is pure: the service holds an :class:`Experiment` and the two models, the report
(:mod:`recsys.experiments.report`) reads the served lists and feedback events that record arm and credit.

Examples
--------
>>> design = Experiment(mode="ab", challenger="music_recommender:abc", share=0.5, salt="exp-1")
>>> arm_of("listener-42", design.salt, design.share) in (CHAMPION_ARM, CHALLENGER_ARM)
True
>>> arm_of("listener-42", "exp-1", 0.0), arm_of("listener-42", "exp-1", 1.0)
('champion', 'challenger')
>>> team_draft([1, 2, 3, 4], [3, 5, 1, 6], k=4, seed=0)
[(1, 'champion'), (3, 'challenger'), (2, 'champion'), (5, 'challenger')]
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Hashable, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.columns import EXPERIMENT_ARMS as ARMS

CHAMPION_ARM, CHALLENGER_ARM = ARMS
SHADOW = "shadow"
"""The arm recorded on a challenger's shadow list (logged, never shown)."""
MODES: tuple[str, ...] = ("off", "shadow", "ab", "interleave")
Mode = Literal["off", "shadow", "ab", "interleave"]
_BUCKETS = 16**15
INTERLEAVE = "interleave"
"""The arm recorded on an interleaved list (its slots' models are in the list's credits)."""
T = TypeVar("T", bound=Hashable)


class Experiment(BaseModel):
    """The experiment the service runs: its design, the challenger's model tag, the A/B share and salt.

    ``mode`` ``off`` (the default) serves the champion alone; every other mode needs a ``challenger`` tag.
    ``share`` is the listeners' share in the challenger's arm under ``ab`` (0 by default: nobody).
    ``traffic`` is the listeners' share taking part under ``interleave`` and ``shadow`` (1 by default: all);
    the others meet the champion alone, at the champion's cost (a salted hash picks them, as for ``ab``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode = "off"
    challenger: str | None = Field(None, min_length=1, max_length=200)
    share: float = Field(0.0, ge=0.0, le=1.0)
    traffic: float = Field(1.0, gt=0.0, le=1.0)
    salt: str = Field("none", min_length=1, max_length=64)
    """Drawn at random for an experiment unless given: only the service and its admin know it, so nobody
    outside can compute which arm a listener is in (and sway the experiment by acting as its listeners)."""

    @model_validator(mode="before")
    @classmethod
    def _secret_salt(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mode", "off") != "off" and not data.get("salt"):
            return {**data, "salt": secrets.token_hex(16)}
        return data

    @model_validator(mode="after")
    def _needs_challenger(self) -> Experiment:
        if self.mode != "off" and not self.challenger:
            raise ValueError(f"mode {self.mode!r} needs a challenger model tag")
        return self

    @property
    def active(self) -> bool:
        """Whether a challenger takes part (any mode but ``off``)."""
        return self.mode != "off"

    def takes_part(self, user_id: str | None) -> bool:
        """Whether the listener's requests run the experiment: every listener under ``ab`` (the arm decides
        which model answers), those whose salted bucket falls below ``traffic`` under the other modes."""
        return self.mode == "ab" or self.traffic >= 1.0 or bucket(user_id or "", self.salt) < self.traffic


def bucket(user_id: str, salt: str) -> float:
    """The listener's uniform position in ``[0, 1)`` for ``salt`` (SHA-256 of ``salt:user_id``)."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).hexdigest()
    return int(digest[:15], 16) / _BUCKETS


def arm_of(user_id: str, salt: str, share: float) -> str:
    """``challenger`` for the listeners whose bucket falls below ``share``, else ``champion`` (sticky)."""
    return CHALLENGER_ARM if bucket(user_id, salt) < share else CHAMPION_ARM


def team_draft(champion: Sequence[T], challenger: Sequence[T], k: int, seed: int) -> list[tuple[T, str]]:
    """Team-draft interleaving of two rankings into ``k`` slots, each credited to the model that picked it.

    Like captains picking teams: the model with fewer picks so far picks next (a coin flip, seeded by
    ``seed``, breaks ties), taking its best-ranked item not picked yet. An item both models rank is credited
    to whichever picked it, so neither model's preference is favoured by where the other placed it
    (Radlinski, Kurup and Joachims 2008). Stops early when both rankings run out.
    """
    rankings, teams = (list(champion), list(challenger)), (CHAMPION_ARM, CHALLENGER_ARM)
    cursors, picks = [0, 0], [0, 0]
    coins = _Coins(seed)
    chosen: set[T] = set()
    out: list[tuple[T, str]] = []
    while len(out) < k:
        # The team with fewer picks first; a coin on a tie.
        first = coins.flip() if picks[0] == picks[1] else int(picks[0] > picks[1])
        for team in (first, 1 - first):
            ranking, at = rankings[team], cursors[team]
            while at < len(ranking) and ranking[at] in chosen:
                at += 1
            cursors[team] = at
            if at < len(ranking):
                chosen.add(ranking[at])
                picks[team] += 1
                out.append((ranking[at], teams[team]))
                break
        else:  # both rankings exhausted
            break
    return out


class _Coins:
    """Fair coin flips from a seed: the bits of a BLAKE2b digest chain (cheaper per request than seeding a
    Mersenne Twister, and the same on every platform)."""

    def __init__(self, seed: int) -> None:
        self._digest = hashlib.blake2b(seed.to_bytes(16, "little", signed=True), digest_size=32).digest()
        self._bits, self._left = int.from_bytes(self._digest, "little"), 256

    def flip(self) -> int:
        if self._left == 0:
            self._digest = hashlib.blake2b(self._digest, digest_size=32).digest()
            self._bits, self._left = int.from_bytes(self._digest, "little"), 256
        bit = self._bits & 1
        self._bits >>= 1
        self._left -= 1
        return bit


def request_seed(user_id: str | None, salt: str, counter: int) -> int:
    """A per-request seed for :func:`team_draft`: reproducible from the listener, salt and request count."""
    digest = hashlib.sha256(f"{salt}:{user_id}:{counter}".encode()).hexdigest()
    return int(digest[:12], 16)
