"""Quality over seeds: train ALS and the Two-Tower per seed with the documented CLI, evaluate, and
report each figure as the mean and spread over the seeds.

For each seed ``s`` this runs, as child processes, exactly what a user would type:

    cascade train mf --data D --seed s --train-split
    cascade train two-tower --data D --seed s --train-split --no-progress [TOWER ARGS]
    cascade evaluate --dataset D --models popular,als,ease,two_tower

and reads ``report.json`` (the evaluation of that seed's artifacts on the test split) and the
Two-Tower artifact's ``metadata.json`` (training seconds, epochs, peak memory of the training
process). Popular and EASE do not depend on the seed (EASE's λ is chosen on a fixed validation
hold-out); they are evaluated each time and their spread shows that. The table is printed and
written to ``$CASCADE_HOME/reports/<data>/seeds.md`` and ``seeds.json``.

    python -m cascade.bench.tower_seeds --data demo --seeds 3 -- --dim 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cascade.runtime.paths import Layout

MODELS = ("popular", "als", "ease", "two_tower")
METRICS = ("recall@20", "ndcg@10", "recall@10", "hit_rate@10", "coverage@10")


def _cascade(args: list[str]) -> None:
    """Run ``cascade ARGS`` in a child process; raise with its output's tail when it fails."""
    cmd = [str(Path(sys.executable).with_name("cascade")), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def run_seed(*, data: str, seed: int, tower_args: list[str], layout: Layout) -> dict[str, Any]:
    """Train both models with ``seed``, evaluate; the figures of that seed."""
    _cascade(["train", "mf", "--data", data, "--seed", str(seed), "--train-split", "--no-progress"])
    tower = ["train", "two-tower", "--data", data, "--seed", str(seed), "--train-split"]
    _cascade([*tower, "--no-progress", *tower_args])
    _cascade(["evaluate", "--dataset", data, "--models", ",".join(MODELS)])
    name = data.split(":", 1)[-1]
    report = json.loads((layout.reports_dir / name / "report.json").read_text())
    latest = layout.artifacts_dir / "two_tower" / "latest"
    meta = json.loads((latest.resolve() / "metadata.json").read_text())
    return {
        "seed": seed,
        "models": {m: report["models"][m] for m in MODELS if m in report["models"]},
        "users_evaluated": report["users_evaluated"],
        "params": report.get("params", {}),
        "two_tower": {
            "train_seconds": meta.get("train_seconds"),
            "peak_rss_mb": meta.get("peak_rss_mb"),
            "best_epoch": meta.get("best_epoch"),
            "epochs_run": [len(h) for h in meta.get("history", [])],
            "val_recall@20": [max(e.get("val_recall@20", 0.0) for e in h) for h in meta["history"]],
            "artifact": str(latest.resolve()),
        },
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """``model -> metric -> (mean, sample standard deviation)`` over the runs."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for model in MODELS:
        values = [r["models"][model] for r in runs if model in r["models"]]
        if not values:
            continue
        out[model] = {}
        for metric in METRICS:
            xs = [float(v[metric]) for v in values]
            spread = statistics.stdev(xs) if len(xs) > 1 else 0.0
            out[model][metric] = (statistics.fmean(xs), spread)
    return out


def format_table(
    runs: list[dict[str, Any]], summary: dict[str, dict[str, tuple[float, float]]]
) -> str:
    """Markdown: mean ± standard deviation per model and metric, ratios, per-seed rows, costs."""
    models = [m for m in MODELS if m in summary]
    lines = [
        f"Mean ± standard deviation over {len(runs)} seeds ({', '.join(str(r['seed']) for r in runs)}); "
        f"{runs[0]['users_evaluated']:,} users evaluated.",
        "",
        "| metric | " + " | ".join(models) + " | Two-Tower / ALS | Two-Tower / EASE |",
        "|---|" + "---:|" * (len(models) + 2),
    ]
    for metric in METRICS:
        cells = [f"{summary[m][metric][0]:.4f} ± {summary[m][metric][1]:.4f}" for m in models]
        ratios = []
        for ref in ("als", "ease"):
            if "two_tower" in summary and ref in summary and summary[ref][metric][0] > 0:
                ratios.append(f"{summary['two_tower'][metric][0] / summary[ref][metric][0]:.3f}x")
            else:
                ratios.append("")
        lines.append(f"| {metric} | " + " | ".join(cells + ratios) + " |")
    lines += [
        "",
        "| seed | "
        + " | ".join(f"{m} R@20" for m in models)
        + " | Two-Tower NDCG@10 | ALS NDCG@10 | epochs run | best epoch | val R@20 | train s | peak MiB |",
        "|---|" + "---:|" * (len(models) + 7),
    ]
    for r in runs:
        t = r["two_tower"]
        lines.append(
            f"| {r['seed']} | "
            + " | ".join(f"{r['models'][m]['recall@20']:.4f}" for m in models)
            + f" | {r['models'].get('two_tower', {}).get('ndcg@10', float('nan')):.4f}"
            + f" | {r['models'].get('als', {}).get('ndcg@10', float('nan')):.4f}"
            + f" | {t['epochs_run']} | {t['best_epoch']} | "
            + ", ".join(f"{v:.4f}" for v in t["val_recall@20"])
            + f" | {t['train_seconds']} | {t['peak_rss_mb']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="demo")
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=42)
    parser.add_argument("tower_args", nargs="*", help="extra `cascade train two-tower` options")
    args = parser.parse_args(argv)
    layout = Layout.from_env()
    runs = []
    started = time.time()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        runs.append(run_seed(data=args.data, seed=seed, tower_args=args.tower_args, layout=layout))
        print(
            f"seed {seed}: {json.dumps(runs[-1]['models'].get('two_tower', {}))}", file=sys.stderr
        )
    summary = summarise(runs)
    table = format_table(runs, summary)
    print(table)
    out = layout.reports_dir / args.data.split(":", 1)[-1]
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.md").write_text(table + "\n")
    payload = {
        "data": args.data,
        "tower_args": args.tower_args,
        "runs": runs,
        "summary": {m: {k: list(v) for k, v in s.items()} for m, s in summary.items()},
        "wall_s": round(time.time() - started, 1),
    }
    (out / "seeds.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written: {out / 'seeds.md'}, {out / 'seeds.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
