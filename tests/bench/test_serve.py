"""bench-serve: targets and report from known figures, argument errors.

A real run starts Triton, the MF service and two gateways and trains the models when missing
(minutes here), so it is exercised by ``make bench-serve``, not by the test suite; the pieces it
drives (``cascade.bench.gateway``, ``fallback_mf.service_bench``, ``cascade.stack``) have their own tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from cascade.bench import serve

SERVE: dict[str, Any] = {
    "rows": [
        {
            "target": "triton direct (gRPC)",
            "concurrency": 1,
            "requests": 100,
            "errors": 0,
            "rps": 100.0,
            "p50_ms": 4.0,
            "p99_ms": 9.0,
            "served_by": "triton 100%",
        },
    ],
    "summary": {
        "best_rps_at_p99_target": 620.0,
        "best_concurrency": 8,
        "p99_target_ms": 50.0,
        "gateway_overhead_p50_ms": 3.5,
        "server_side_overhead_mean_ms": 1.2,
        "gateway_cpu_ms_per_request": 1.4,
        "bare_best_rps_at_p99_target": 1000.0,
        "bare_best_concurrency": 16,
        "bare_cpu_ms_per_request": 0.5,
        "gateway_vs_bare": 0.62,
    },
    "cpu_quota": {
        "cpus": 0.5,
        "throttled": {"gateway": {"periods": 100.0, "throttled_periods": 7.0, "throttled_s": 0.3}},
    },
}
MF: dict[str, Any] = {
    "target_rate": 500.0,
    "achieved_rate": 499.0,
    "n_items": 3000,
    "p50_ms": 1.0,
    "p90_ms": 2.0,
    "p99_ms": 8.0,
    "max_ms": 20.0,
    "errors": 0,
    "server_cpu_ms_per_request": 0.9,
    "requests": 10_000,
}


def test_targets_are_judged() -> None:
    rows = {str(r[0]): r for r in serve.targets(SERVE, MF)}
    met = [r[3] for r in rows.values()]
    assert met == ["NO", "yes", "yes", "yes", "NO", "yes"]
    assert "at concurrency 8" in list(rows)[2]
    ratio, cpu = list(rows.values())[3:5]
    assert ratio[1] == 62.0 and "concurrency 8 vs 16" in str(ratio[0])
    assert cpu[1] == 1.4 and cpu[2] == "<= 1 ms"


def test_targets_without_measurements() -> None:
    assert [r[3] for r in serve.targets(None, None)] == ["-"] * 6


def test_render_has_every_section() -> None:
    text = serve.render(SERVE, MF, notes=["_footer_"])
    assert "| triton direct (gRPC) | 1 |" in text
    assert "| fallback_mf (open loop) | 3,000 | 500 |" in text
    assert "### Gateway against a bare FastAPI app" in text
    assert "| gateway / bare | 62% | - | - |" in text
    assert "CPU quota 0.5 CPU" in text and "gateway 0.30 s (7 of 100 periods)" in text
    assert "### Targets" in text and text.endswith("_footer_")


@pytest.mark.parametrize(
    "argv", [["--concurrencies", "1,x"], ["--concurrencies", "0"], ["--users", "0"]]
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        serve.main(argv)
    assert exc.value.code == 2


@pytest.mark.parametrize("flag", ["--gateway-cpu", "--mf-cpu"])
def test_a_quota_that_cannot_be_applied_fails_before_anything_starts(
    flag: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may start")

    monkeypatch.setattr(serve, "run_stack_bench", refuse)
    assert serve.main([flag, "0"]) == 1  # below CpuQuota's 0.01 CPU floor
    err = capsys.readouterr().err
    assert f"{flag} 0 cannot be applied" in err and f"run without {flag}" in err
