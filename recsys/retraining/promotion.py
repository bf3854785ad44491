"""What the retraining flow decides about a challenger: the feedback gate, the erasure override, and
packaging the winner from the objects in memory."""

from __future__ import annotations

from pathlib import Path

from recsys.config import Params
from recsys.feedback.erasure_steps import honour_erasure
from recsys.offline import gate as gating
from recsys.retraining.challenger import Retrained


def gate_retrained(retrained: Retrained, params: Params, erased: int = 0) -> tuple[gating.GateDecision, bool]:
    """The feedback gate on ``retrained`` (:func:`recsys.offline.gate.decide_feedback`), overridden to
    promote when the champion holds the feedback of ``erased`` erased listeners; and whether it was."""
    gated = gating.decide_feedback(retrained.challenger, retrained.champion, params.gate, retrained.lead)
    decision = honour_erasure(gated, erased)
    return decision, decision.promote and not gated.promote


def promote_retrained(project: Path, retrained: Retrained, params: Params) -> str:
    """Package the challenger (with its refitted two-stage ranker when the champion was served by one) with
    its grown split and the record of whose feedback it trained on, then promote it; its tag."""
    from recsys import registry

    tag = registry.package_model(
        project,
        retrained.model,
        retrained.split,
        retrained.challenger,
        params.model_dump(mode="json"),
        feedback_users=retrained.feedback_users,
        ranker=retrained.ranker,
    )
    registry.promote(tag)
    return tag
