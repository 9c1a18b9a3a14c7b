"""``cascade report online``: the table of impressions, clicks and CTR per tier and model version,
and a clear error (no traceback, no password) when Redis does not answer."""

from __future__ import annotations

import os
import subprocess
import sys

from cascade.report_online import format_table, online_rows
from cascade.runtime.procs import free_port

ROWS = [
    {"tier": "two_tower", "model_version": "two_tower/3", "impressions": 12000, "clicks": 600,
     "ctr": 0.05},
    {"tier": "als", "model_version": "als/v2", "impressions": 3000, "clicks": 60, "ctr": 0.02},
]  # fmt: skip


def test_rows_formatted() -> None:
    rows = online_rows(redis_url="redis://unused", table=lambda url, dataset: list(ROWS))
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["tier", "model", "version", "impressions", "clicks", "CTR"]
    assert "two_tower/3" in lines[2] and "12,000" in lines[2] and "5.00%" in lines[2]
    assert "2.00%" in lines[3]
    assert "no served impressions" in format_table([])
    assert "-" in format_table([{**ROWS[0], "impressions": 0, "clicks": 0, "ctr": None}])


def test_unreachable_redis_is_one_line_and_exit_2_without_the_password() -> None:
    url = f"redis://:s3cr3t@127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [sys.executable, "-m", "cascade.cli", "report", "online", "--redis-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "s3cr3t" not in result.stderr
    assert "cannot read the online metrics" in result.stderr and "***" in result.stderr


def test_the_running_stacks_data_set_is_the_default_and_an_unknown_one_is_an_error(
    tmp_path, monkeypatch
) -> None:
    import json
    import os

    import psutil

    from cascade.report_online import default_dataset
    from cascade.runtime.paths import Layout
    from cascade.stack_status import state_path

    layout = Layout(home=tmp_path)
    monkeypatch.delenv("CASCADE_DATASET", raising=False)
    assert default_dataset(layout) == "demo"  # no stack
    layout.run_dir.mkdir(parents=True)
    me = psutil.Process()
    up = {"pid": me.pid, "create_time": me.create_time(), "dataset": "tiny"}
    state_path(layout).write_text(json.dumps({"cascade_up": up}))
    assert default_dataset(layout) == "tiny"  # the stack `cascade up` runs (here: this test)
    monkeypatch.setenv("CASCADE_DATASET", "demo")
    assert default_dataset(layout) == "demo"
    # A data set that does not exist is named as such, not reported as "no traffic yet".
    # (Redis at its default URL; without a Redis the command exits 2 as well.)
    env = {k: v for k, v in os.environ.items() if k != "CASCADE_DATASET"}
    result = subprocess.run(
        [sys.executable, "-m", "cascade.cli", "report", "online", "--dataset", "nosuch"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "CASCADE_HOME": str(tmp_path)},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_the_running_stacks_redis_is_the_default_without_a_flag_or_redis_url(
    tmp_path, monkeypatch
) -> None:
    """A stack started with REDIS_URL=.../11 is read from a second terminal without it."""
    import json

    import psutil

    from cascade.runtime.paths import Layout
    from cascade.stack_status import stack_redis_url, state_path

    layout = Layout(home=tmp_path)
    assert stack_redis_url(layout) is None  # no stack
    layout.run_dir.mkdir(parents=True)
    me = psutil.Process()
    up = {"pid": me.pid, "create_time": me.create_time(), "dataset": "tiny"}
    up["redis_url"] = "redis://127.0.0.1:1/11"  # nothing listens: the error names it
    state_path(layout).write_text(json.dumps({"cascade_up": up}))
    assert stack_redis_url(layout) == "redis://127.0.0.1:1/11"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CASCADE_DATASET")}
    result = subprocess.run(
        [sys.executable, "-m", "cascade.cli", "report", "online"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "CASCADE_HOME": str(tmp_path)},
    )
    assert result.returncode == 2 and "redis://127.0.0.1:1/11" in result.stderr, result.stderr
    state_path(layout).write_text(json.dumps({"cascade_up": {**up, "pid": 2**22 + 7}}))
    assert stack_redis_url(layout) is None  # a stack that is gone names nothing
