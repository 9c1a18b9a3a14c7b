"""The rollout state machine: pure data and pure transitions, the clock injected.

::

    stable --start--> shadow --advance--> canary(p1) --advance--> ... canary(pn) --advance--> promoted
       \\------start (no shadow)--------->/      |                                  promote ^
                        shadow / canary --abort or rollback--> rolled_back

``promoted`` and ``rolled_back`` end a rollout: the next ``start`` begins another one (from
``stable`` too). Every transition is a function ``(state, ..., now) -> (state, Transition)``;
an illegal one raises :class:`IllegalTransition` naming the phase and what was asked. The store
(``gateway.rollout.store``) persists the state with a revision for compare-and-set; nothing here
does I/O, so the machine is tested with an injected clock and no sleeps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

MAX_STEPS = 20
_ROLLOUT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Phase(StrEnum):
    """Where a rollout stands (``gateway_rollout_phase`` exports :data:`PHASE_VALUES`)."""

    STABLE = "stable"
    SHADOW = "shadow"
    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


PHASE_VALUES = {p: i for i, p in enumerate(Phase)}
ACTIVE = frozenset({Phase.SHADOW, Phase.CANARY})


class IllegalTransition(ValueError):
    """A transition the current phase does not allow (the message says which and why)."""


@dataclass(frozen=True)
class Plan:
    """What one rollout does: the two Triton versions, how long each phase lasts, the steps.

    ``steps``: canary percentages, strictly increasing, each in (0, 100). ``shadow_share``: the
    share of stable-served requests also sent to the candidate during the shadow phase.
    """

    rollout_id: str
    stable: int
    candidate: int
    shadow_s: float = 300.0
    steps: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0)
    step_s: float = 300.0
    shadow_share: float = 0.1

    def __post_init__(self) -> None:
        if not _ROLLOUT_ID.fullmatch(self.rollout_id):
            raise ValueError(
                f"rollout id must match [A-Za-z0-9._-]{{1,64}}, got {self.rollout_id!r}"
            )
        if self.stable < 1 or self.candidate < 1:
            raise ValueError("versions are Triton version numbers >= 1")
        if self.stable == self.candidate:
            raise ValueError(f"candidate and stable are the same version ({self.stable})")
        if not self.steps or len(self.steps) > MAX_STEPS:
            raise ValueError(f"give 1 to {MAX_STEPS} canary steps")
        if any(not 0 < p < 100 for p in self.steps):
            raise ValueError(f"canary steps are percentages in (0, 100), got {list(self.steps)}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"canary steps must increase, got {list(self.steps)}")
        if self.shadow_s < 0 or self.step_s <= 0:
            raise ValueError("shadow duration must be >= 0 and step duration > 0")
        if not 0 <= self.shadow_share <= 1:
            raise ValueError(f"shadow share must be in [0, 1], got {self.shadow_share}")

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "stable": self.stable,
            "candidate": self.candidate,
            "shadow_s": self.shadow_s,
            "steps": list(self.steps),
            "step_s": self.step_s,
            "shadow_share": self.shadow_share,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Plan:
        return cls(
            rollout_id=str(raw["rollout_id"]),
            stable=int(raw["stable"]),
            candidate=int(raw["candidate"]),
            shadow_s=float(raw["shadow_s"]),
            steps=tuple(float(p) for p in raw["steps"]),
            step_s=float(raw["step_s"]),
            shadow_share=float(raw["shadow_share"]),
        )


@dataclass(frozen=True)
class Transition:
    """One change of phase or step, as appended to the history."""

    rollout_id: str
    from_phase: Phase
    to_phase: Phase
    step: int  # the canary step index after the transition (-1 outside canary)
    at: float  # wall-clock seconds (the injected clock)
    reason: str
    by: str  # "cli", "controller", or a replica name

    def describe(self) -> str:
        """``rollout_id: from -> to [(step N)] by who: reason``, one line for logs and status."""
        return describe_move(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "from": self.from_phase.value,
            "to": self.to_phase.value,
            "step": self.step,
            "at": self.at,
            "reason": self.reason,
            "by": self.by,
        }


def describe_move(move: dict[str, Any]) -> str:
    """A history entry (``Transition.to_json``) in one line; the step only inside a canary, and
    the first record of a store (``init``, stable to stable) said as such."""
    if move["from"] == move["to"] == Phase.STABLE.value:
        change = f"{move['to']} (initialised)"
    else:
        change = f"{move['from']} -> {move['to']}"
        if move["to"] == Phase.CANARY.value and move["step"] >= 0:
            change += f" (step {move['step']})"
    return f"{move['rollout_id']}: {change} by {move['by']}: {move['reason']}"


@dataclass(frozen=True)
class RolloutState:
    """The shared state. ``stable_version``: what serves everyone outside a canary (None: no
    rollout ever ran, the gateway sends no version and Triton picks its newest).
    ``rev``: bumped by every write, for compare-and-set."""

    phase: Phase = Phase.STABLE
    stable_version: int | None = None
    plan: Plan | None = None
    step: int = -1
    since: float = 0.0  # when the current phase (or canary step) began
    reason: str = ""
    rev: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # forward compatible, round-tripped

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def candidate_percent(self) -> float:
        """The share of users (percent) the candidate serves now."""
        if self.phase is Phase.CANARY and self.plan is not None:
            return self.plan.steps[self.step]
        return 0.0

    @property
    def shadow_share(self) -> float:
        """The share of stable-served requests mirrored to the candidate now."""
        if self.phase is Phase.SHADOW and self.plan is not None:
            return self.plan.shadow_share
        return 0.0

    @property
    def rollout_id(self) -> str | None:
        return self.plan.rollout_id if self.plan else None

    def phase_due(self, now: float) -> bool:
        """Whether the current shadow phase or canary step has lasted its planned time."""
        if self.plan is None or not self.active:
            return False
        length = self.plan.shadow_s if self.phase is Phase.SHADOW else self.plan.step_s
        return now - self.since >= length

    def label(self) -> str:
        """``canary(5%)``, ``shadow``, ... for people."""
        if self.phase is Phase.CANARY:
            return f"canary({self.candidate_percent:g}%)"
        return self.phase.value

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "stable_version": self.stable_version,
            "plan": self.plan.to_json() if self.plan else None,
            "step": self.step,
            "since": self.since,
            "reason": self.reason,
            "rev": self.rev,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RolloutState:
        plan = raw.get("plan")
        stable = raw.get("stable_version")
        return cls(
            phase=Phase(raw["phase"]),
            stable_version=None if stable is None else int(stable),
            plan=Plan.from_json(plan) if plan else None,
            step=int(raw.get("step", -1)),
            since=float(raw.get("since", 0.0)),
            reason=str(raw.get("reason", "")),
            rev=int(raw.get("rev", 0)),
            extra=dict(raw.get("extra") or {}),
        )


def set_stable(
    state: RolloutState, version: int, *, now: float, by: str = "cli"
) -> tuple[RolloutState, Transition]:
    """Name the stable version outside a rollout (before the first one: until then the gateway
    names no version and Triton's newest serves, so exporting a new version would reach
    everyone)."""
    if state.active:
        raise IllegalTransition(
            f"rollout {state.rollout_id} is {state.label()}: abort or promote it first"
        )
    if version < 1:
        raise IllegalTransition(f"versions are Triton version numbers >= 1, got {version}")
    new = replace(state, phase=Phase.STABLE, stable_version=version, since=now,
                  reason=f"stable version set to {version}")  # fmt: skip
    rid = state.rollout_id or "-"
    return new, Transition(rid, state.phase, Phase.STABLE, -1, now, new.reason, by)


def _move(
    state: RolloutState, to: Phase, *, step: int, now: float, reason: str, by: str, **changes: Any
) -> tuple[RolloutState, Transition]:
    assert state.plan is not None or "plan" in changes
    plan = changes.get("plan", state.plan)
    assert plan is not None
    new = replace(state, phase=to, step=step, since=now, reason=reason, **changes)
    return new, Transition(plan.rollout_id, state.phase, to, step, now, reason, by)


def start(
    state: RolloutState, plan: Plan, *, now: float, by: str = "cli"
) -> tuple[RolloutState, Transition]:
    """Begin ``plan``: shadow first (or the first canary step when ``shadow_s`` is 0)."""
    if state.active:
        raise IllegalTransition(
            f"rollout {state.rollout_id} is {state.label()}: abort or promote it first"
        )
    if state.stable_version is not None and plan.stable != state.stable_version:
        raise IllegalTransition(
            f"the plan's stable version {plan.stable} is not the serving stable version "
            f"{state.stable_version}"
        )
    if state.plan is not None and state.plan.rollout_id == plan.rollout_id:
        raise IllegalTransition(f"rollout id {plan.rollout_id} was used already")
    if plan.shadow_s > 0:
        return _move(
            state, Phase.SHADOW, step=-1, now=now, reason="started", by=by, plan=plan,
            stable_version=plan.stable,
        )  # fmt: skip
    return _move(
        state, Phase.CANARY, step=0, now=now, reason="started (no shadow)", by=by, plan=plan,
        stable_version=plan.stable,
    )  # fmt: skip


def advance(
    state: RolloutState, *, now: float, reason: str = "step passed", by: str = "controller"
) -> tuple[RolloutState, Transition]:
    """Shadow -> first canary step -> next step ... -> promoted after the last step."""
    if not state.active or state.plan is None:
        raise IllegalTransition(f"cannot advance from {state.phase.value}: no rollout in progress")
    if state.phase is Phase.SHADOW:
        return _move(state, Phase.CANARY, step=0, now=now, reason=reason, by=by)
    if state.step + 1 < len(state.plan.steps):
        return _move(state, Phase.CANARY, step=state.step + 1, now=now, reason=reason, by=by)
    return promote(state, now=now, reason=f"{reason}; all steps passed", by=by)


def promote(
    state: RolloutState, *, now: float, reason: str = "promoted", by: str = "cli"
) -> tuple[RolloutState, Transition]:
    """The candidate becomes the stable version and serves everyone."""
    if not state.active or state.plan is None:
        raise IllegalTransition(f"cannot promote from {state.phase.value}: no rollout in progress")
    return _move(
        state, Phase.PROMOTED, step=-1, now=now, reason=reason, by=by,
        stable_version=state.plan.candidate,
    )  # fmt: skip


def roll_back(
    state: RolloutState, *, now: float, reason: str, by: str = "controller"
) -> tuple[RolloutState, Transition]:
    """Traffic returns to the stable version at once (abort, or a failed analysis)."""
    if not state.active or state.plan is None:
        raise IllegalTransition(
            f"cannot roll back from {state.phase.value}: no rollout in progress"
        )
    return _move(state, Phase.ROLLED_BACK, step=-1, now=now, reason=reason, by=by)
