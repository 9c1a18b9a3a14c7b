"""The rollout state machine with an injected clock: legal paths, refusals, round trips."""

from __future__ import annotations

import pytest

from gateway.rollout import state as sm
from gateway.rollout.state import IllegalTransition, Phase, Plan, RolloutState


def plan(**kw: object) -> Plan:
    args: dict[str, object] = {"rollout_id": "r1", "stable": 1, "candidate": 2}
    args.update(kw)
    return Plan(**args)  # type: ignore[arg-type]


def test_full_path_with_clock() -> None:
    p = plan(shadow_s=60, steps=(1, 5, 25, 50), step_s=120)
    s, t = sm.start(RolloutState(), p, now=1000.0)
    assert (s.phase, t.from_phase, t.to_phase, s.stable_version) == (
        Phase.SHADOW, Phase.STABLE, Phase.SHADOW, 1,
    )  # fmt: skip
    assert s.shadow_share == p.shadow_share and s.candidate_percent == 0
    assert not s.phase_due(1059.9) and s.phase_due(1060.0)
    seen = []
    now = 1060.0
    for _ in range(4):
        s, t = sm.advance(s, now=now)
        seen.append(s.candidate_percent)
        assert s.phase is Phase.CANARY and s.since == now and not s.phase_due(now + 119)
        assert s.phase_due(now + 120)
        now += 120
    assert seen == [1, 5, 25, 50]
    s, t = sm.advance(s, now=now)
    assert s.phase is Phase.PROMOTED and s.stable_version == 2 and t.to_phase is Phase.PROMOTED
    assert s.candidate_percent == 0 and not s.active


def test_no_shadow_starts_at_first_step() -> None:
    s, _ = sm.start(RolloutState(), plan(shadow_s=0), now=0)
    assert s.phase is Phase.CANARY and s.candidate_percent == 1


def test_rollback_returns_to_stable_and_records_reason() -> None:
    s, _ = sm.start(RolloutState(stable_version=1), plan(), now=0)
    s, _ = sm.advance(s, now=10)
    s, t = sm.roll_back(s, now=11, reason="errors worse")
    assert s.phase is Phase.ROLLED_BACK and s.stable_version == 1 and s.candidate_percent == 0
    assert t.reason == "errors worse" and t.to_json()["to"] == "rolled_back"


@pytest.mark.parametrize("phase", [Phase.STABLE, Phase.PROMOTED, Phase.ROLLED_BACK])
def test_idle_phases_refuse_advance_promote_rollback(phase: Phase) -> None:
    s = RolloutState(phase=phase, stable_version=1, plan=plan())
    with pytest.raises(IllegalTransition, match=phase.value):
        sm.advance(s, now=0)
    with pytest.raises(IllegalTransition, match=phase.value):
        sm.promote(s, now=0)
    with pytest.raises(IllegalTransition, match=phase.value):
        sm.roll_back(s, now=0, reason="x")


def test_start_refused_while_active_or_on_wrong_stable_or_reused_id() -> None:
    s, _ = sm.start(RolloutState(), plan(), now=0)
    with pytest.raises(IllegalTransition, match="abort or promote"):
        sm.start(s, plan(rollout_id="r2"), now=1)
    done, _ = sm.promote(s, now=2)
    with pytest.raises(IllegalTransition, match="stable version 1 is not"):
        sm.start(done, plan(rollout_id="r2", stable=1, candidate=3), now=3)
    with pytest.raises(IllegalTransition, match="used already"):
        sm.start(done, plan(stable=2, candidate=3), now=3)
    again, _ = sm.start(done, plan(rollout_id="r2", stable=2, candidate=3), now=3)
    assert again.phase is Phase.SHADOW


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"candidate": 1}, "same version"),
        ({"steps": (5, 1)}, "increase"),
        ({"steps": (0,)}, r"\(0, 100\)"),
        ({"steps": (100,)}, r"\(0, 100\)"),
        ({"steps": ()}, "steps"),
        ({"rollout_id": "bad id!"}, "rollout id"),
        ({"shadow_share": 1.5}, "shadow share"),
        ({"step_s": 0}, "step duration"),
    ],
)
def test_bad_plans_refused(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan(**kw)


def test_json_round_trip() -> None:
    s, _ = sm.start(RolloutState(), plan(steps=(2, 10)), now=5)
    s, _ = sm.advance(s, now=6)
    assert RolloutState.from_json(s.to_json()) == s
    assert s.label() == "canary(2%)"


def test_set_stable_outside_a_rollout_only() -> None:
    s, t = sm.set_stable(RolloutState(), 4, now=1)
    assert (s.phase, s.stable_version, t.to_phase) == (Phase.STABLE, 4, Phase.STABLE)
    active, _ = sm.start(s, plan(stable=4, candidate=5), now=2)
    with pytest.raises(IllegalTransition, match="abort or promote"):
        sm.set_stable(active, 5, now=3)
