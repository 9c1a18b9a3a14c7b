"""The rollout's Prometheus metrics, registered on the gateway's registry.

- ``gateway_rollout_phase`` (0 stable, 1 shadow, 2 canary, 3 promoted, 4 rolled_back) and
  ``gateway_rollout_candidate_percent``, as this replica last read them;
  ``gateway_rollout_state_stale`` 1 while the replica serves a last known state (Redis down);
- ``gateway_rollout_transitions_total{to}``: each replica counts every transition it sees
  (alerts use ``max``, not ``sum``, across replicas);
- ``gateway_rollout_calls_total{version,arm,outcome}`` and ``gateway_rollout_call_seconds
  {version,arm}``: primary calls per Triton version (``arm`` ``stable``, ``candidate``, or
  ``shadow`` for the mirrored calls); ``outcome`` ok / error / timeout / invalid;
- ``gateway_rollout_fallbacks_total{version,arm}``: requests of an arm served by another tier;
- ``gateway_shadow_dropped_total{cause}`` (``busy``: the shadow slots were full; ``saturated``:
  the event loop was); ``gateway_shadow_overlap`` (overlap@k of candidate and stable answers)
  and ``gateway_shadow_score_correlation`` (Pearson over the items both returned), per version;
- ``gateway_rollout_analysis_total{decision}``: the controller's looks.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.metrics import LATENCY_BUCKETS
from gateway.rollout.state import PHASE_VALUES, Phase, RolloutState

_SHARE_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_CORR_BUCKETS = (-0.5, 0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.phase = Gauge("gateway_rollout_phase", "Rollout phase (see PHASE_VALUES)", registry=r)
        self.percent = Gauge(
            "gateway_rollout_candidate_percent", "Users the candidate serves, %", registry=r
        )
        self.stale = Gauge(
            "gateway_rollout_state_stale", "1: Redis unreadable, last known state kept", registry=r
        )
        self.transitions = Counter(
            "gateway_rollout_transitions", "Rollout transitions seen", ["to"], registry=r
        )
        self.calls = Counter(
            "gateway_rollout_calls",
            "Primary calls per Triton version",
            ["version", "arm", "outcome"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "gateway_rollout_call_seconds",
            "Primary call latency per Triton version",
            ["version", "arm"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "gateway_rollout_fallbacks",
            "Requests of an arm served by another tier",
            ["version", "arm"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "gateway_shadow_dropped", "Shadow calls not made", ["cause"], registry=r
        )
        self.shadow_overlap = Histogram(
            "gateway_shadow_overlap",
            "overlap@k of the candidate's and the stable answer",
            ["version"],
            buckets=_SHARE_BUCKETS,
            registry=r,
        )
        self.shadow_correlation = Histogram(
            "gateway_shadow_score_correlation",
            "Pearson correlation of the two versions' scores over the items both returned",
            ["version"],
            buckets=_CORR_BUCKETS,
            registry=r,
        )
        self.analysis = Counter(
            "gateway_rollout_analysis", "Controller looks by decision", ["decision"], registry=r
        )
        for phase in (Phase.PROMOTED, Phase.ROLLED_BACK):
            self.transitions.labels(to=phase.value)
        for cause in ("busy", "saturated"):
            self.shadow_dropped.labels(cause=cause)
        self.show(RolloutState())
        self.stale.set(0)

    def show(self, state: RolloutState) -> None:
        self.phase.set(PHASE_VALUES[state.phase])
        self.percent.set(state.candidate_percent)
