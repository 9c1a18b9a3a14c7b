"""Quality over seeds: train ALS and the Two-Tower per seed with the documented CLI, evaluate, and
report each figure as the mean and spread over the seeds.

For each seed ``s`` this runs, as child processes, exactly what a user would type:

    cascade train mf --data D --seed s --train-split
    cascade train two-tower --data D --seed s --train-split --no-progress [TOWER ARGS]
    cascade evaluate --dataset D --models popular,als,ease,two_tower

and reads ``report.json`` (the evaluation of that seed's artifacts on the test split) and the
Two-Tower artifact's ``metadata.json`` (training seconds, epochs, peak memory of the training
process). Each command's wall time and peak RSS are taken from the kernel (``os.wait4``'s
``ru_maxrss``), and its output goes to ``seeds-logs/`` beside the report, so a long run can be
watched. Popular and EASE do not depend on the seed (EASE's λ is chosen on a fixed validation
hold-out); they are evaluated each time and their spread shows that. Every figure is the mean,
the sample standard deviation and [min, max] over the seeds; the Two-Tower / ALS ratio is given
of the means and per seed. With ``--profile`` a synthetic data set is (re)built in that profile
first (``cascade data -s synthetic:<scale> --profile P``) and the files are named after it. The
table is printed and written to ``$CASCADE_HOME/reports/<data>/seeds[-<profile>].md`` and
``.json``.

    python -m cascade.bench.tower_seeds --data demo --profile sessions --seeds 3
    python -m cascade.bench.tower_seeds --data demo --seeds 3 -- --dim 128   # extra tower options

Seeds can run in parallel, one ``CASCADE_HOME`` each (``--first-seed S --seeds 1``); ``--merge
A.json B.json ...`` then writes their joint table in this ``CASCADE_HOME``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cascade.runtime.paths import Layout

MODELS = ("popular", "als", "ease", "two_tower")
METRICS = ("recall@20", "ndcg@10", "recall@10", "hit_rate@10", "coverage@10")


def _executable() -> str:
    """The ``cascade`` script of this interpreter's environment."""
    return str(Path(sys.executable).with_name("cascade"))


def _cascade(args: list[str], *, log: Path) -> dict[str, float]:
    """Run ``cascade ARGS`` in a child process, its output to ``log``; its wall seconds and peak
    RSS (MiB, the kernel's ``ru_maxrss`` of that child alone). Raise with the log's tail when it
    fails."""
    cmd = [_executable(), *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as out:
        out.write(f"$ cascade {' '.join(args)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}), {log}:\n{tail}")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1)}


def run_seed(
    *, data: str, seed: int, tower_args: list[str], layout: Layout, logs: Path
) -> dict[str, Any]:
    """Train both models with ``seed``, evaluate; the figures of that seed."""
    costs = {
        "als": _cascade(
            ["train", "mf", "--data", data, "--seed", str(seed), "--train-split", "--no-progress"],
            log=logs / f"{seed}-als.log",
        )
    }
    tower = ["train", "two-tower", "--data", data, "--seed", str(seed), "--train-split"]
    costs["two_tower"] = _cascade(
        [*tower, "--no-progress", *tower_args], log=logs / f"{seed}-two_tower.log"
    )
    costs["evaluate"] = _cascade(
        ["evaluate", "--dataset", data, "--models", ",".join(MODELS)],
        log=logs / f"{seed}-evaluate.log",
    )
    return collect_seed(seed=seed, data=data, layout=layout, costs=costs)


def collect_seed(
    *, seed: int, data: str, layout: Layout, costs: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """The figures of one seed: the evaluation's ``report.json`` and the metadata of the
    Two-Tower artifact it evaluated (named in the report; ``latest`` is a pointer file, not a
    link, so it is read through ``two_tower.artifacts.latest_dir`` when the report names none)."""
    from two_tower.artifacts import latest_dir, root_dir

    name = data.split(":", 1)[-1]
    report = json.loads((layout.reports_dir / name / "report.json").read_text())
    version = (report.get("params", {}).get("two_tower") or {}).get("artifact")
    folder = (
        root_dir(layout.artifacts_dir) / version if version else latest_dir(layout.artifacts_dir)
    )
    meta = json.loads((folder / "metadata.json").read_text())
    return {
        "seed": seed,
        "models": {m: report["models"][m] for m in MODELS if m in report["models"]},
        "users_evaluated": report["users_evaluated"],
        "params": report.get("params", {}),
        "commands": costs,
        "two_tower": {
            "train_seconds": meta.get("train_seconds"),
            "peak_rss_mb": meta.get("peak_rss_mb"),
            "best_epoch": meta.get("best_epoch"),
            "epochs_run": [len(h) for h in meta.get("history", [])],
            "val_recall@20": [max(e.get("val_recall@20", 0.0) for e in h) for h in meta["history"]],
            "artifact": str(folder),
            "prior": meta.get("prior") or {},
        },
    }


Stats = tuple[float, float, float, float]  # mean, sample standard deviation, min, max


def _stats(xs: list[float]) -> Stats:
    spread = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return (statistics.fmean(xs), spread, min(xs), max(xs))


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Stats]]:
    """``model -> metric -> (mean, sample standard deviation, min, max)`` over the runs."""
    out: dict[str, dict[str, Stats]] = {}
    for model in MODELS:
        values = [r["models"][model] for r in runs if model in r["models"]]
        if not values:
            continue
        out[model] = {metric: _stats([float(v[metric]) for v in values]) for metric in METRICS}
    return out


def seed_ratios(runs: list[dict[str, Any]], metric: str = "recall@20") -> list[float]:
    """Two-Tower / ALS of ``metric`` within each seed (seeds missing either model are left out)."""
    out = []
    for r in runs:
        tower, als = r["models"].get("two_tower"), r["models"].get("als")
        if tower and als and float(als[metric]) > 0:
            out.append(float(tower[metric]) / float(als[metric]))
    return out


def format_table(runs: list[dict[str, Any]], summary: dict[str, dict[str, Stats]]) -> str:
    """Markdown: mean ± standard deviation [min, max] per model and metric, ratios of the means,
    per-seed rows with the Two-Tower / ALS ratio, and the training costs."""
    models = [m for m in MODELS if m in summary]
    lines = [
        f"Mean ± sample standard deviation [min, max] over {len(runs)} seeds "
        f"({', '.join(str(r['seed']) for r in runs)}); "
        f"{runs[0]['users_evaluated']:,} users evaluated.",
        "",
        "| metric | " + " | ".join(models) + " | Two-Tower / ALS | Two-Tower / EASE |",
        "|---|" + "---:|" * (len(models) + 2),
    ]
    for metric in METRICS:
        cells = ["{:.4f} ± {:.4f} [{:.4f}, {:.4f}]".format(*summary[m][metric]) for m in models]
        ratios = []
        for ref in ("als", "ease"):
            if "two_tower" in summary and ref in summary and summary[ref][metric][0] > 0:
                ratios.append(f"{summary['two_tower'][metric][0] / summary[ref][metric][0]:.3f}x")
            else:
                ratios.append("")
        lines.append(f"| {metric} | " + " | ".join(cells + ratios) + " |")
    ratios_r20 = seed_ratios(runs)
    if ratios_r20:
        lines += [
            "",
            "Two-Tower / ALS Recall@20 within each seed: "
            + ", ".join(f"{x:.3f}" for x in ratios_r20)
            + f" (mean {statistics.fmean(ratios_r20):.3f}, "
            f"[{min(ratios_r20):.3f}, {max(ratios_r20):.3f}]).",
        ]
    lines += [
        "",
        "| seed | "
        + " | ".join(f"{m} R@20" for m in models)
        + " | TT / ALS | Two-Tower NDCG@10 | ALS NDCG@10 | epochs run | best epoch | val R@20"
        + " | fit s | train cmd s / peak MiB | ALS cmd s / MiB | evaluate s / MiB |",
        "|---|" + "---:|" * (len(models) + 9),
    ]
    for r in runs:
        t = r["two_tower"]
        tower, als = r["models"].get("two_tower", {}), r["models"].get("als", {})
        ratio = (
            f"{tower['recall@20'] / als['recall@20']:.3f}" if tower and als.get("recall@20") else ""
        )
        cost = r.get("commands", {})

        def cmd(name: str, cost: dict[str, Any] = cost) -> str:
            c = cost.get(name)
            return f"{c['wall_s']:.0f} / {c['peak_rss_mb']:.0f}" if c else ""

        lines.append(
            f"| {r['seed']} | "
            + " | ".join(f"{r['models'][m]['recall@20']:.4f}" for m in models)
            + f" | {ratio}"
            + f" | {tower.get('ndcg@10', float('nan')):.4f}"
            + f" | {als.get('ndcg@10', float('nan')):.4f}"
            + f" | {t['epochs_run']} | {t['best_epoch']} | "
            + ", ".join(f"{v:.4f}" for v in t["val_recall@20"])
            + f" | {t['train_seconds']} | {cmd('two_tower')} | {cmd('als')} | {cmd('evaluate')} |"
        )
    lines += [
        "",
        "fit s: the Two-Tower's training loop (metadata `train_seconds`); train cmd: the whole "
        "`cascade train two-tower` process (data, training set, fit, test metrics, save), wall "
        "seconds and peak RSS from `os.wait4`; peak RSS of the training loop's process is the "
        "same figure.",
    ]
    priors = [(r["seed"], r["two_tower"].get("prior") or {}) for r in runs]
    if any("validation_recall@20" in p for _, p in priors):
        lines.append(
            "Recent-popularity prior (two_tower.item_prior; the Two-Tower figures above include "
            "it): "
            + "; ".join(
                f"seed {seed} beta {p.get('beta')}, validation Recall@20 by beta "
                f"{p.get('validation_recall@20')}"
                for seed, p in priors
            )
        )
    return "\n".join(lines)


def write_results(out: Path, stem: str, *, runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Summarise ``runs``, write ``<stem>.md`` and ``<stem>.json`` under ``out``; the table."""
    summary = summarise(runs)
    table = format_table(runs, summary)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(table + "\n")
    payload = {
        **meta,
        "runs": runs,
        "summary": {m: {k: list(v) for k, v in s.items()} for m, s in summary.items()},
    }
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    return table


def merge(paths: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The runs of several ``seeds*.json`` files (seeds run in parallel, one home each), by seed;
    ValueError when they differ in data, profile or tower options, or repeat a seed."""
    payloads = [json.loads(p.read_text()) for p in paths]
    keys = ("data", "profile", "tower_args")
    first = {k: payloads[0].get(k) for k in keys}
    for path, payload in zip(paths, payloads, strict=True):
        if {k: payload.get(k) for k in keys} != first:
            raise ValueError(
                f"{path}: { ({k: payload.get(k) for k in keys}) } differs from {first}"
            )
    runs = sorted((r for p in payloads for r in p["runs"]), key=lambda r: int(r["seed"]))
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed appears twice: {seeds}")
    return runs, {**first, "merged_from": [str(p) for p in paths]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="demo")
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=42)
    parser.add_argument(
        "--profile",
        default=None,
        help="synthetic profile (sessions, uniform): build the data set in it first",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="seeds*.json files of runs made in parallel: write their joint table instead",
    )
    parser.add_argument("tower_args", nargs="*", help="extra `cascade train two-tower` options")
    args = parser.parse_args(argv)
    layout = Layout.from_env()
    name = args.data.split(":", 1)[-1]
    out = layout.reports_dir / name
    stem = f"seeds-{args.profile}" if args.profile else "seeds"
    if args.merge:
        merged, joint = merge(args.merge)
        stem = f"seeds-{joint['profile']}" if joint.get("profile") else "seeds"
        print(write_results(out, stem, runs=merged, meta=joint))
        print(f"written: {out / stem}.md, .json", file=sys.stderr)
        return 0
    logs = out / f"{stem}-logs"
    started = time.time()
    if args.profile:
        source = args.data if ":" in args.data else f"synthetic:{args.data}"
        _cascade(["data", "-s", source, "--profile", args.profile], log=logs / "data.log")
    meta = {"data": args.data, "profile": args.profile, "tower_args": args.tower_args}
    runs: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        runs.append(
            run_seed(data=name, seed=seed, tower_args=args.tower_args, layout=layout, logs=logs)
        )
        print(
            f"seed {seed}: {json.dumps(runs[-1]['models'].get('two_tower', {}))}", file=sys.stderr
        )
        # after every seed, so a run stopped part-way keeps what it measured
        meta["wall_s"] = round(time.time() - started, 1)
        table = write_results(out, stem, runs=runs, meta=meta)
    print(table)
    print(f"written: {out / stem}.md, .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
