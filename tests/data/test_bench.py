"""bench_generate runs in a fresh process and reports times and peak memory."""

from __future__ import annotations

from cascade.data.bench import bench_generate


def test_bench_generate_tiny():
    out = bench_generate("tiny", timeout_s=120)
    assert out["scale"] == "tiny" and out["users"] == 300 and out["interactions"] > 5000
    for key in ("generate_s", "features_s", "write_s", "wall_s", "cpu_s", "peak_rss_mb"):
        assert out[key] >= 0
    assert out["peak_rss_mb"] >= out["generate_peak_rss_mb"] > 10
