"""The fault drills D1-D10 and D12, each under open-loop load, with a baseline from the same run.

Each drill: load starts; ``baseline_s`` of healthy traffic; the fault; observation; the fault
removed (when the drill says so); then figures and :class:`~cascade.drills.analysis.Check`s.
:func:`run_drills` heals the stack before each drill. :class:`Plan` holds the durations;
``Plan.ci()`` is the shortened form the CI test runs (same criteria code). The drills live in
``model_drills.py`` (D1-D5, D9), ``platform_drills.py`` (D6-D7), ``otlp_drill.py`` (D8) and
``overload_drill.py`` (D10: 2x overload, then recovery) and ``event_drill.py`` (D12: the events
consumer killed under event load).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cascade.drills.analysis import Check, DrillResult
from cascade.drills.event_drill import d12_consumer_down
from cascade.drills.model_drills import (
    d1_triton_kill,
    d2_triton_freeze,
    d3_triton_slow,
    d4_triton_errors,
    d5_all_models_down,
    d9_primary_garbage,
)
from cascade.drills.otlp_drill import d8_otlp_blackhole
from cascade.drills.overload_drill import d10_overload
from cascade.drills.platform_drills import d6_redis_down, d7_spike
from cascade.drills.target import DrillTarget
from cascade.drills.timeline import Plan

logger = logging.getLogger(__name__)

__all__ = ["DRILLS", "NEEDS_PROXY", "Plan", "run_drills"]


Drill = Callable[[DrillTarget, Plan], Awaitable[DrillResult]]
DRILLS: dict[str, Drill] = {
    "D1": d1_triton_kill,
    "D2": d2_triton_freeze,
    "D3": d3_triton_slow,
    "D4": d4_triton_errors,
    "D5": d5_all_models_down,
    "D6": d6_redis_down,
    "D7": d7_spike,
    "D8": d8_otlp_blackhole,
    "D9": d9_primary_garbage,
    "D10": d10_overload,
    # D11 is reserved (issue 18's rollout drill); D12: the events consumer down (issue 17)
    "D12": d12_consumer_down,
}
NEEDS_PROXY = {"D3": "triton", "D4": "triton", "D8": "otlp", "D9": "triton"}


async def run_drills(
    target: DrillTarget, names: list[str], *, plan: Plan, heal: bool = True
) -> list[DrillResult]:
    """Run the named drills in order, healing the stack before each; skips those it cannot run."""
    results = []
    for name in names:
        if name not in DRILLS:
            raise ValueError(f"unknown drill {name!r} (known: {', '.join(DRILLS)})")
        needs = NEEDS_PROXY.get(name)
        if needs and needs not in target.proxies:
            result = DrillResult(name, DRILLS[name].__doc__ or name)
            result.checks = [Check("fault proxy", "missing", f"a {needs} proxy", None)]
            results.append(result)
            continue
        if heal:
            try:
                await asyncio.to_thread(target.heal)
            except Exception as exc:  # the stack could not be healed: this drill cannot run
                logger.exception("heal before %s failed", name)
                result = DrillResult(name, DRILLS[name].__doc__ or name)
                result.checks = [
                    Check("stack healthy before the drill", repr(exc)[:120], "healthy", False)
                ]
                results.append(result)
                continue
        logger.info("drill %s starting", name)
        try:
            result = await DRILLS[name](target, plan)
        except Exception as exc:  # a drill that crashes is a failed drill; the others still run
            logger.exception("drill %s crashed", name)
            result = DrillResult(name, DRILLS[name].__doc__ or name)
            result.checks = [Check("drill ran to the end", repr(exc)[:120], "no error", False)]
        logger.info("drill %s: %s", name, "PASS" if result.passed else "FAIL")
        results.append(result)
    if heal:
        try:
            await asyncio.to_thread(target.heal)
        except Exception:
            logger.exception("the stack did not heal after the drills")
    return results
