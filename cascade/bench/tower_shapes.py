"""Old vs new user-tower shape on Triton, same run: the serving target of issue 14 (the Two-Tower
on Triton stays within 1.5x of the old tower's latency at the demo catalogue).

Two randomly initialised Two-Towers over one demo-sized catalogue (latency does not depend on
the weights, ``cascade.bench.two_tower.random_trained``):

- **old**: the shape shipped before issue 14: 2 members x 128, the mean of the recent items, no
  seen-set reader, a user-id embedding;
- **new**: ``TrainParams``' defaults (what ``cascade train two-tower`` builds today) with the
  item-neighbour term (``two_tower.item_neighbours``: full random tables, 50 per item, gamma 0.8).

Each is exported with today's contract and ``triton_models/two_tower/model.py`` and served by
its own tritonserver (both run for the whole benchmark). Each round loads every concurrency level
(1, 8, 32) on old, then on new (A B A B when ``--rounds 2``), with ``cascade.bench.two_tower``'s
async gRPC load generator and request pool (k = 20; 20 recent and 20-500 random seen items per
request, the same requests for both shapes), 1 s of warm-up then ``--duration`` seconds. Per
level and shape: req/s, p50, p99 and Triton's CPU ms per request (user + system CPU seconds of
the tritonserver process and its children, the Python backend's stub included, over the
measured window, divided by the requests answered), each the mean over the rounds; then the
new / old ratios, in bold above the 1.5x target. The table is printed with the machine's load
average and written to ``$CASCADE_HOME/reports/bench/tower_shapes.md`` and ``.json`` (every
round's rows in the JSON).

    python -m cascade.bench.tower_shapes --duration 5 --rounds 2     # make bench-tower-shapes

The load generator shares the machine's CPUs with the servers: compare the two shapes within a
run, not runs on different days; a busy machine moves the latencies far more than the CPU ms.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cascade.bench.table import machine_footer, write_report
from cascade.bench.two_tower import CONCURRENCY, load_level, random_trained, triton_process
from cascade.cpu_quota import CpuQuota, CpuQuotaError

if TYPE_CHECKING:
    from two_tower.train import TrainParams

logger = logging.getLogger(__name__)

TARGET = 1.5  # issue 14: new / old latency at most this
SHAPE_NAMES = ("old", "new")
# The user tower before issue 14, as overrides of TrainParams (the rest, dim 128 included, as today).
OLD_SHAPE: dict[str, Any] = {
    "members": 2,
    "dim": 128,
    "seq_layers": 0,
    "seen_pool": 0,
    "seen_attention": False,
    "user_id_embedding": True,
}


def shape_params(name: str) -> TrainParams:
    """``TrainParams`` of the ``old`` or ``new`` user-tower shape."""
    from two_tower.train import TrainParams

    if name == "new":
        return TrainParams()
    if name == "old":
        return dataclasses.replace(TrainParams(), **OLD_SHAPE)
    raise ValueError(f"unknown shape {name!r} (one of {', '.join(SHAPE_NAMES)})")


def describe(params: Any) -> str:
    """A one-line description of a user-tower shape (a ``TrainParams``)."""
    layers = "layer" if params.seq_layers == 1 else "layers"
    recent = (
        f"{params.seq_layers} self-attention {layers} over the recent items"
        if params.seq_layers
        else "mean of the recent items"
    )
    if not params.seen_pool:
        seen = "no seen-set reader"
    else:
        how = "attention pooling" if params.seen_attention else "mean"
        seen = f"{how} of up to {params.seen_pool} seen items"
    user = "user-id embedding " + ("on" if params.user_id_embedding else "off")
    return f"{params.members} x {params.dim}, {recent}, {seen}, {user}"


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def cpu_ms_per_request(row: dict[str, Any]) -> float:
    """Triton's CPU ms per answered request in one measured window (NaN without either)."""
    cpu, requests = float(row.get("server_cpu_s", math.nan)), int(row.get("requests", 0))
    if not requests or not math.isfinite(cpu) or cpu < 0:  # < 0: a model process went away
        return math.nan
    return 1000.0 * cpu / requests


def ratio(new: float, old: float) -> float:
    """``new / old``; NaN when either is missing or ``old`` is not positive."""
    if not (math.isfinite(new) and math.isfinite(old)) or old <= 0:
        return math.nan
    return new / old


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per concurrency: each shape's means over the rounds, and the new / old ratios.

    ``rows``: one per (round, shape, concurrency), as ``load_level`` returns them plus ``shape``.
    """
    out = []
    for c in sorted({r["concurrency"] for r in rows}):
        entry: dict[str, Any] = {"concurrency": c}
        for name in SHAPE_NAMES:
            mine = [r for r in rows if r["concurrency"] == c and r["shape"] == name]
            entry[name] = {
                "rounds": len(mine),
                "requests": sum(r["requests"] for r in mine),
                "errors": sum(r["errors"] for r in mine),
                "throughput": _mean([r["throughput"] for r in mine]),
                "p50_ms": _mean([r["p50_ms"] for r in mine]),
                "p99_ms": _mean([r["p99_ms"] for r in mine]),
                "cpu_ms_per_req": _mean([cpu_ms_per_request(r) for r in mine]),
            }
        old, new = entry["old"], entry["new"]
        for key, field in (("p50", "p50_ms"), ("p99", "p99_ms"), ("cpu", "cpu_ms_per_req")):
            entry[f"{key}_ratio"] = ratio(new[field], old[field])
        out.append(entry)
    return out


def _ms(value: float) -> str:
    """Three significant figures at most: 3.10, 18.9, 115."""
    if not math.isfinite(value):
        return "-"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _times(value: float, *, target: float | None = TARGET) -> str:
    """``1.07x``; bold when above ``target``."""
    if not math.isfinite(value):
        return "-"
    text = f"{value:.2f}x"
    return f"**{text}**" if target is not None and value > target else text


def _shape_cell(s: dict[str, Any]) -> str:
    rps = f"{s['throughput']:,.0f}" if math.isfinite(s["throughput"]) else "-"
    return f"{rps}, {_ms(s['p50_ms'])} / {_ms(s['p99_ms'])}"


def _cpu_cell(entry: dict[str, Any]) -> str:
    old, new = entry["old"]["cpu_ms_per_req"], entry["new"]["cpu_ms_per_req"]
    return f"{_ms(old)} → {_ms(new)} ({_times(entry['cpu_ratio'], target=None)})"


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """The markdown table of ``summarise``'s output (the README's layout)."""
    lines = [
        "| conc. | old: req/s, p50 / p99 ms | new: req/s, p50 / p99 ms | new / old p50 "
        "| new / old p99 | Triton CPU ms/req old → new |",
        "|---:|---|---|---:|---:|---|",
    ]
    for e in summary:
        lines.append(
            f"| {e['concurrency']} | {_shape_cell(e['old'])} | {_shape_cell(e['new'])} "
            f"| {_times(e['p50_ratio'])} | {_times(e['p99_ratio'])} | {_cpu_cell(e)} |"
        )
    return "\n".join(lines)


def verdict(summary: Sequence[dict[str, Any]], *, target: float = TARGET) -> str:
    """One line: where new / old p50 and p99 exceed ``target``."""
    over = [
        f"p{q} at concurrency {e['concurrency']} ({e[f'p{q}_ratio']:.2f}x)"
        for e in summary
        for q in (50, 99)
        if math.isfinite(e[f"p{q}_ratio"]) and e[f"p{q}_ratio"] > target
    ]
    if not over:
        return f"Within {target}x of the old tower at every level (p50 and p99)."
    return f"Above {target}x of the old tower: " + ", ".join(over) + "."


def _errors_note(summary: Sequence[dict[str, Any]]) -> str | None:
    errors = {
        (name, e["concurrency"]): e[name]["errors"]
        for e in summary
        for name in SHAPE_NAMES
        if e[name]["errors"]
    }
    if not errors:
        return None
    return "**Failed requests** (not in the latencies): " + ", ".join(
        f"{name} at {c}: {n}" for (name, c), n in errors.items()
    )


def model_processes(pid: int) -> list[int]:
    """Pids of the server's descendants (the Python backend's stubs, one per model instance)."""
    import psutil

    try:
        return sorted(p.pid for p in psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def measure(
    *,
    items: int,
    duration: float,
    rounds: int,
    concurrency: Sequence[int],
    workdir: Path,
    triton_cpu: float | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Serve both shapes (one tritonserver each) and load them, rounds x levels x (old, new);
    with ``triton_cpu``, each server and its model processes held to that many CPUs (a cgroup
    quota per server, :class:`cascade.cpu_quota.CpuQuota`).

    The rows, and the shapes whose model processes changed while loading (a model reloaded
    under load: its figures are not to be trusted)."""
    trained = {
        name: random_trained(
            items,
            params=shape_params(name),
            seed=0,
            neighbour_gamma=0.8 if name == "new" else 0.0,
        )
        for name in SHAPE_NAMES
    }
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        # entered before the servers, so removed after they have stopped
        quotas = {
            name: stack.enter_context(CpuQuota(f"cascade-bench-shape-{name}", cpus=triton_cpu))
            for name in SHAPE_NAMES
            if triton_cpu is not None
        }
        servers = {
            name: stack.enter_context(triton_process(model, label=f"shape-{name}", workdir=workdir))
            for name, model in trained.items()
        }
        for server in servers.values():  # both started above: they load in parallel
            server.wait_ready(timeout=300)
        stubs = {name: model_processes(server.pid) for name, server in servers.items()}
        for name, quota in quotas.items():
            for pid in (servers[name].pid, *stubs[name]):
                quota.add(pid)
        for r in range(rounds):
            for c in concurrency:
                for name in SHAPE_NAMES:
                    row = load_level(
                        trained[name],
                        servers[name].grpc_url,
                        concurrency=c,
                        duration=duration,
                        cpu_pid=servers[name].pid,
                    )
                    row.update(shape=name, round=r + 1)
                    rows.append(row)
                    logger.info("round %d %s c=%d: %s", r + 1, name, c, row)
        changed = [n for n, server in servers.items() if model_processes(server.pid) != stubs[n]]
    return rows, changed


def render(
    summary: Sequence[dict[str, Any]],
    *,
    items: int,
    duration: float,
    rounds: int,
    reloaded: Sequence[str] = (),
    triton_cpu: float | None = None,
) -> str:
    """The report's markdown body (without the footer)."""
    held = (
        f"; each tritonserver and its model processes held to {triton_cpu:g} CPU (cgroup quota)"
        if triton_cpu is not None
        else ""
    )
    parts = [
        "## Two-Tower user-tower shapes on Triton: old vs new, same run (issue 14)",
        f"{items:,} items, random weights; each shape exported with today's contract and "
        f"`model.py` and served by its own tritonserver; async gRPC, k = 20, 20 recent and "
        f"20-500 random seen items per request; {duration:g} s per level after 1 s of warm-up; "
        f"means of {rounds} round(s), each old then new at every level{held}.\n\n"
        f"- old: {describe(shape_params('old'))}\n"
        f"- new: {describe(shape_params('new'))} (`TrainParams` defaults)",
        format_table(summary),
        verdict(summary),
    ]
    note = _errors_note(summary)
    if note:
        parts.append(note)
    if reloaded:
        parts.append(
            f"**Not comparable**: Triton's model processes changed during the run "
            f"({', '.join(reloaded)}): a model was loaded again under load."
        )
    return "\n\n".join(parts)


def _levels(text: str) -> list[int]:
    levels = [int(x) for x in text.split(",") if x.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("a comma list of concurrencies >= 1")
    return levels


def main(argv: list[str] | None = None) -> int:
    """Run the A/B, print the table with the footer, write the report; 1 when a level got no
    answers or a model was loaded again meanwhile, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per level")
    parser.add_argument("--rounds", type=int, default=2, help="old/new rounds (A B A B: 2)")
    parser.add_argument("--items", type=int, default=3_000, help="catalogue size")
    parser.add_argument(
        "--concurrency", type=_levels, default=list(CONCURRENCY), help="e.g. 1,8,32"
    )
    parser.add_argument("--name", default="tower_shapes", help="report file name")
    parser.add_argument(
        "--triton-cpu",
        type=float,
        default=None,
        help="hold each tritonserver (and its model processes) to this many CPUs, e.g. 0.5",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.items < 100:
        parser.error("--rounds >= 1, --duration > 0 and --items >= 100")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    load = os.getloadavg()
    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="tower-shapes-bench-"))
    try:
        rows, reloaded = measure(
            items=args.items,
            duration=args.duration,
            rounds=args.rounds,
            concurrency=args.concurrency,
            workdir=workdir,
            triton_cpu=args.triton_cpu,
        )
    except CpuQuotaError as exc:
        print(f"bench-tower-shapes: --triton-cpu {args.triton_cpu:g}: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = summarise(rows)
    body = render(
        summary,
        items=args.items,
        duration=args.duration,
        rounds=args.rounds,
        reloaded=reloaded,
        triton_cpu=args.triton_cpu,
    )
    markdown = body + "\n\n" + machine_footer(load_before=load)
    print(markdown)
    md, js = write_report(
        args.name,
        markdown=markdown,
        data={
            "args": vars(args),
            "shapes": {name: shape_params(name).to_dict() for name in SHAPE_NAMES},
            "summary": summary,
            "rows": rows,
            "reloaded": reloaded,
            "wall_s": round(time.time() - started, 1),
            "load_before": load,
            "load_after": os.getloadavg(),
        },
    )
    print(f"\nwritten: {md}, {js}", file=sys.stderr)
    empty = any(e[n]["requests"] == 0 for e in summary for n in SHAPE_NAMES)
    return 1 if empty or reloaded else 0


if __name__ == "__main__":
    sys.exit(main())
