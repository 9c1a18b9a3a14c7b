"""The adaptive in-flight limit: multiplicative decrease on a congested loop, additive increase."""

from __future__ import annotations

import pytest

from gateway.edge.admission import AdaptiveLimit


def test_starts_at_the_ceiling_and_falls_to_the_floor_while_the_loop_lags() -> None:
    limit = AdaptiveLimit(ceiling=64, floor=8, lag_target_s=0.010)
    assert limit.limit == 64
    readings = [limit.observe_lag(0.050) for _ in range(13)]
    assert readings[0] == 57  # 64 * 0.9
    assert readings == sorted(readings, reverse=True)
    assert limit.limit <= 16  # under a second of congested 50 ms probes
    for _ in range(50):
        limit.observe_lag(0.5)
    assert limit.limit == 8  # never below the floor


def test_climbs_back_one_per_calm_probe_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit(ceiling=20, floor=8)
    for _ in range(30):
        limit.observe_lag(1.0)
    assert limit.limit == 8
    assert [limit.observe_lag(0.001) for _ in range(3)] == [9, 10, 11]
    for _ in range(100):
        limit.observe_lag(0.0)
    assert limit.limit == 20


def test_no_ceiling_means_no_limit_and_a_small_ceiling_caps_the_floor() -> None:
    unlimited = AdaptiveLimit(ceiling=0)
    assert unlimited.observe_lag(1.0) == 0 and unlimited.limit == 0
    small = AdaptiveLimit(ceiling=2, floor=8)
    assert small.observe_lag(1.0) == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"ceiling": -1}, {"ceiling": 8, "floor": 0}, {"ceiling": 8, "decrease": 1.0},
     {"ceiling": 8, "increase": 0}, {"ceiling": 8, "lag_target_s": 0}],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(**kwargs)  # type: ignore[arg-type]
