"""Wall time and peak memory of generating a synthetic data set and its feature tables.

Each run happens in a fresh Python process, so its peak RSS is the run's own.

    python -m cascade.data.bench [SCALE [PROFILE]]     # default: demo sessions
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from cascade.data.profiles import DEFAULT_PROFILE, Profile

_CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
from cascade.data.features import build_feature_tables, write_feature_tables
from cascade.data.dataset import write_dataset
from cascade.data.synthetic import generate

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

scale, profile = sys.argv[1], sys.argv[2]
t0, c0 = time.perf_counter(), cpu()
ds = generate(scale=scale, profile=profile)
t1, c1 = time.perf_counter(), cpu()
gen_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tables = build_feature_tables(ds)
t2, c2 = time.perf_counter(), cpu()
with tempfile.TemporaryDirectory() as tmp:
    write_dataset(ds, Path(tmp) / scale)
    write_feature_tables(tables, Path(tmp) / scale)
    t3 = time.perf_counter()
print(json.dumps({
    "scale": scale,
    "profile": profile,
    "users": len(ds.users),
    "items": len(ds.items),
    "interactions": len(ds.interactions),
    "activity_rows": len(tables["user_activity.parquet"]),
    "generate_s": round(t1 - t0, 2),
    "features_s": round(t2 - t1, 2),
    "write_s": round(t3 - t2, 2),
    "wall_s": round(t3 - t0, 2),
    "generate_cpu_s": round(c1 - c0, 2),
    "features_cpu_s": round(c2 - c1, 2),
    "cpu_s": round(cpu() - c0, 2),
    "generate_peak_rss_mb": round(gen_rss / 1024, 1),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
"""


def bench_generate(
    scale: str, *, profile: Profile = DEFAULT_PROFILE, timeout_s: float = 1800
) -> dict[str, Any]:
    """Generate ``scale`` in ``profile``, build and write its feature tables in a subprocess;
    return the figures.

    Keys: scale, profile, users, items, interactions, activity_rows, generate_s, features_s, write_s,
    wall_s (all three), generate_cpu_s, features_cpu_s, cpu_s (user + system CPU seconds: a
    figure that other load on the machine does not inflate), generate_peak_rss_mb (peak resident set after generation alone) and
    peak_rss_mb (the subprocess's peak over the whole run).
    """
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, scale, Profile(profile).value],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench of {scale} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    scale = sys.argv[1] if len(sys.argv) > 1 else "demo"
    profile = Profile(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_PROFILE
    print(json.dumps(bench_generate(scale, profile=profile), indent=2))
