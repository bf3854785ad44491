"""The experiment a service runs (:mod:`recsys.experiments.design`): the challenger beside the champion, and
how ``/recommend`` answers under each design.

The admin sets the experiment (``POST /admin/experiment``); the worker that takes the call loads the
challenger first (a bad tag is refused and nothing changes), then announces the design in the feedback
database (:mod:`recsys.serving.signals`); every other worker, on this host and on the others, loads the same
challenger when it notices (this host's at their next request, the others' within a second). A restarted
replica reads the design from the database again. When the
challenger becomes the champion (a reload), the experiment is over: every design then serves the champion.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from recsys.experiments.design import (
    CHALLENGER_ARM,
    CHAMPION_ARM,
    INTERLEAVE,
    SHADOW,
    Experiment,
    arm_of,
    request_seed,
    team_draft,
)
from recsys.feedback.events import FeedbackEvent
from recsys.serving import logic
from recsys.serving.exploration import Explorer
from recsys.serving.loading import ModelSource
from recsys.serving.schemas import RecommendRequest
from recsys.serving.session import EMPTY, NO_EVENTS, SessionEvent
from recsys.serving.signals import Signals
from recsys.serving.state import ServingState

_LOG = logging.getLogger(__name__)
EXPERIMENT_SIGNAL = "experiment"


@dataclass(frozen=True)
class Running:
    """What one request sees: the design and the challenger's state (None while the design is ``off``)."""

    design: Experiment
    challenger: ServingState | None

    @property
    def active(self) -> bool:
        """Whether a challenger takes part in this request."""
        return self.design.active and self.challenger is not None


OFF = Running(Experiment(), None)


class ExperimentHolder:
    """The worker's current :class:`Running` experiment; changes are built fully, then swapped in."""

    def __init__(self, source: ModelSource, signals: Signals) -> None:
        self.source, self.signals = source, signals
        self.running = OFF
        self.error: str | None = None
        self.seen: tuple[int, ...] | None = None  # the first sync reads what the workers ran
        self._lock = threading.Lock()
        self._requests = 0

    def start(self, design: Experiment) -> Running:
        """Load the challenger of ``design``, swap it in, and announce it to the other workers.

        Raises
        ------
        registry.RegistryError or OSError
            When the challenger's tag cannot be loaded: the running experiment is left as it was.
        FeedbackUnavailableError
            When the design cannot be announced (the database is down): nothing changed.
        """
        with self._lock:
            running = self._build(design)
            self.signals.announce(EXPERIMENT_SIGNAL, design.model_dump_json())
            self.seen = self.signals.version(EXPERIMENT_SIGNAL)
            self.running, self.error = running, None
        _LOG.info("experiment %s with challenger %s", design.mode, design.challenger)
        return running

    def sync(self) -> None:
        """Load the experiment last announced (none: ``off``); on failure keep the old.

        The announcement counts as seen only once its experiment is swapped in: a request that arrives while
        the once-a-second poll is still loading the challenger waits for it here instead of being answered
        under the old design.
        """
        with self._lock:
            self.signals.refresh()  # the value: this host's signal file says only that it changed
            announced = self.signals.version(EXPERIMENT_SIGNAL)
            if announced == self.seen:
                return  # another thread loaded it while this one waited for the lock
            try:
                text = self.signals.value(EXPERIMENT_SIGNAL) or "{}"
                design = Experiment.model_validate_json(text)
                if design != self.running.design or (design.active and self.running.challenger is None):
                    self.running, self.error = self._build(design), None
            except Exception as err:  # a bad file or tag must leave the served experiment untouched
                self.error = f"{type(err).__name__}: {err}"
                _LOG.error("experiment not loaded, keeping %s: %s", self.running.design.mode, self.error)
            finally:
                self.seen = announced

    def needs_sync(self) -> bool:
        """True when another worker (of this host or another) announced a change."""
        return self.signals.version(EXPERIMENT_SIGNAL) != self.seen

    def for_request(self, champion: ServingState) -> Running:
        """The experiment for a request served by ``champion``: off once the challenger is the champion."""
        running = self.running
        if (
            running.active
            and running.challenger is not None
            and running.challenger.version == champion.version
        ):
            return OFF
        return running

    def next_seed(self, user_id: str | None) -> int:
        """A per-request seed for interleaving (reproducible from the listener and the request count)."""
        self._requests += 1
        return request_seed(user_id, self.running.design.salt, self._requests)

    def drop_revoked(self, revoked: frozenset[str]) -> None:
        """Stop the experiment here when its challenger was revoked (it holds an erased listener's feedback):
        every request is then the champion's, in every worker, as each sees the revocation."""
        running = self.running
        if running.challenger is None or running.challenger.version not in revoked:
            return
        with self._lock:
            self.running = OFF
            self.error = f"challenger {running.challenger.version} was revoked: experiment stopped"
        _LOG.warning(self.error)

    def _build(self, design: Experiment) -> Running:
        if not design.active:
            return Running(design, None)
        assert design.challenger is not None  # Experiment guarantees it
        return Running(design, ServingState(self.source.load(design.challenger)))


Shadow = Callable[[], tuple[dict[str, Any], float]]
"""Makes the challenger's shadow answer and its re-ranking strength (for the log)."""


def recommend(
    running: Running,
    champion: ServingState,
    request: RecommendRequest,
    disliked: Any,
    seed: int,
    events: Sequence[SessionEvent] = NO_EVENTS,
    explorer: Explorer | None = None,
) -> tuple[dict[str, Any], Shadow | None]:
    """The answer under the running experiment, and (``shadow``) a call that makes the challenger's answer,
    to log after the response is sent, so shadowing costs listeners no time.

    ``ab``: the listener's arm (a salted hash of the user id) picks the model; the answer says which
    (``arm``). ``interleave``: both models rank; the list is team-drafted from both and each item says which
    model drafted it (``model``); cold-start lists (either model does not know the listener) are the
    champion's alone. ``shadow``: the champion answers and the challenger's answer is returned beside it, for
    the log only (made after the response). Outside an experiment, and for a listener outside its
    ``traffic`` (interleave, shadow): the champion's answer, unchanged. The listener's session ``events``
    shape every model's list alike. The ``explorer`` explores the champion's and each A/B arm's lists
    (:mod:`recsys.serving.exploration`), never an interleaved list or a shadow answer.
    """
    if not running.active or running.challenger is None or not running.design.takes_part(request.user_id):
        return logic.recommend(champion, request, disliked, events, explorer), None
    challenger, design = running.challenger, running.design
    if design.mode == "ab":
        arm = arm_of(request.user_id, design.salt, design.share)
        state = challenger if arm == CHALLENGER_ARM else champion
        return logic.recommend(state, request, disliked, events, explorer) | {"arm": arm}, None
    if design.mode == "shadow":
        ours = logic.recommend(champion, request, disliked, events, explorer)
        return ours, lambda: (
            logic.recommend(challenger, request, disliked, events) | {"arm": SHADOW},
            challenger.bias_strength,
        )
    return interleaved(champion, challenger, request, disliked, seed, events), None


def strength(running: Running, champion: ServingState, answer: dict[str, Any]) -> float:
    """The re-ranking strength of the model that answered (the challenger's for its A/B arm)."""
    if answer.get("arm") == CHALLENGER_ARM and running.challenger is not None:
        return running.challenger.bias_strength
    return champion.bias_strength


def interleaved(
    champion: ServingState,
    challenger: ServingState,
    request: RecommendRequest,
    disliked: Any,
    seed: int,
    events: Sequence[SessionEvent] = NO_EVENTS,
) -> dict[str, Any]:
    """One list team-drafted from both models' rankings (:func:`recsys.experiments.design.team_draft`), each
    item with the ``model`` that drafted it; only the drafted items get reasons (each from its own model).
    ``model_version`` is the champion's, ``challenger_version`` the other's. A listener either model does not
    know gets the champion's list alone."""
    sessions = {
        CHAMPION_ARM: champion.session(events) if request.session else EMPTY,
        CHALLENGER_ARM: challenger.session(events) if request.session else EMPTY,
    }
    ours = logic.ranked(champion, request, disliked, sessions[CHAMPION_ARM])
    theirs = logic.ranked(challenger, request, disliked, sessions[CHALLENGER_ARM])
    if ours[0] is None or theirs[0] is None:
        return logic.answer_for(champion, request.user_id, *ours)
    states = {CHAMPION_ARM: champion, CHALLENGER_ARM: challenger}
    rankings = {CHAMPION_ARM: ours, CHALLENGER_ARM: theirs}
    ids = {team: [states[team].item_ids[i] for i in rankings[team][1].tolist()] for team in states}
    drafted = team_draft(ids[CHAMPION_ARM], ids[CHALLENGER_ARM], request.k, seed)
    built = {}
    for team, state in states.items():
        user, indices, scores = rankings[team]
        positions = [ids[team].index(item) for item, owner in drafted if owner == team]
        answer = logic.answer_for(
            state, request.user_id, user, indices[positions], scores[positions], sessions[team]
        )
        built[team] = iter(answer["items"])
    items = [next(built[team]) | {"model": team} for _, team in drafted]
    return {
        "user_id": request.user_id,
        "items": items,
        "cold_start": False,
        "model_version": champion.version,
        "arm": INTERLEAVE,
        "challenger_version": challenger.version,
        "session_events": sessions[CHAMPION_ARM].events,
    }


def with_arms(design: Experiment, events: list[FeedbackEvent]) -> list[FeedbackEvent]:
    """Under ``ab``, events that name no arm get their listener's (the client may not know it)."""
    if design.mode != "ab":
        return events
    return [
        event
        if event.arm is not None
        else event.model_copy(update={"arm": arm_of(event.user_id, design.salt, design.share)})
        for event in events
    ]
