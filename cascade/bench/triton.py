"""``make bench-triton``: the Two-Tower benchmark (``cascade.bench.two_tower``), with a report file.

``cascade.bench.two_tower`` owns the measurement: Triton throughput and p50/p99 at concurrency 1, 8 and
32 for the ``demo`` catalogue and a 100K-item one, training samples/s single process and 2-process
DDP, and the evaluation table. It runs here in a child process (its own tritonserver and
torchrun children stop with it); its markdown is printed, footed with the machine's load
average, and written to ``$CASCADE_HOME/reports/bench/triton.md`` and ``.json``. Arguments this
module does not know (``--duration 5``, ``--skip-training``, ...) are passed to it.

    python -m cascade.bench.triton --duration 5
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time

from cascade.bench.table import machine_footer, write_report

DELEGATE = "cascade.bench.two_tower"


def run_delegate(args: list[str], *, timeout_s: float) -> tuple[int, str, str]:
    """Run ``python -m cascade.bench.two_tower ARGS``; ``(exit code, stdout, stderr tail)``."""
    if importlib.util.find_spec(DELEGATE) is None:
        return 2, "", f"{DELEGATE} is not installed in this checkout"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", DELEGATE, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out, f"{DELEGATE} timed out after {timeout_s:.0f} s"
    return proc.returncode, proc.stdout, proc.stderr[-4000:]


def main(argv: list[str] | None = None) -> int:
    """Run the delegate, print its tables with the footer, write the report; its exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for the whole run")
    parser.add_argument("--name", default="triton", help="report file name")
    args, passthrough = parser.parse_known_args(argv)
    load = os.getloadavg()
    started = time.time()
    code, out, err = run_delegate(passthrough, timeout_s=args.timeout)
    parts = ["## Two-Tower and Triton benchmark", out.strip() or "_no output_"]
    if code != 0:
        parts.append(f"**{DELEGATE} failed (exit {code})**:\n\n```\n{err.strip()[-2000:]}\n```")
    parts.append(machine_footer(load_before=load))
    markdown = "\n\n".join(parts)
    print(markdown)
    md, js = write_report(
        args.name,
        markdown=markdown,
        data={
            "delegate": DELEGATE,
            "args": passthrough,
            "returncode": code,
            "stdout": out,
            "stderr_tail": err if code else "",
            "wall_s": round(time.time() - started, 1),
            "load_before": load,
            "load_after": os.getloadavg(),
        },
    )
    print(f"\nwritten: {md}, {js}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
