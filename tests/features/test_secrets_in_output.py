"""Issue 20, item 7: a Redis password never reaches the terminal or the logs.

``cascade features apply`` (the real CLI in a subprocess, verbose logging) with a Redis URL that
holds a password and points where nothing listens: the error says Redis is unreachable and
names the URL with its password masked; ``s3cr3t`` is nowhere in stdout or stderr.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cascade.runtime.paths import Layout
from cascade.runtime.redact import RedactFilter, redact, redact_url
from tests.features.conftest import DATASET

SECRET = "s3cr3t"
URL = f"redis://:{SECRET}@127.0.0.1:1/0"  # nothing listens on port 1


@pytest.mark.integration
@pytest.mark.parametrize("command", ["apply", "materialize"])
def test_feature_cli_never_prints_the_redis_password(
    command: str, project: str, layout: Layout, tiny_dataset: Path
) -> None:
    env = dict(os.environ, REDIS_URL=URL, CASCADE_HOME=str(layout.home), CASCADE_LOG_LEVEL="DEBUG")
    proc = subprocess.run(
        [sys.executable, "-m", "cascade.cli", "-v", "features", command, "--dataset", DATASET],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "does not answer" in proc.stderr
    assert "redis://:***@127.0.0.1:1/0" in proc.stderr
    assert SECRET not in proc.stdout and SECRET not in proc.stderr


def test_choosing_the_online_store_logs_no_password(caplog: pytest.LogCaptureFixture) -> None:
    """A given Redis URL that does not answer is an error that names it without its password."""
    from cascade.runtime.feature_store import FeatureStoreError
    from cascade.stack_build import choose_online_store

    saved = os.environ.get("REDIS_URL")
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(FeatureStoreError) as raised:
            choose_online_store(URL)
    finally:
        if saved is not None:
            os.environ["REDIS_URL"] = saved
    assert "does not answer" in str(raised.value) and SECRET not in str(raised.value)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        (URL, "redis://:***@127.0.0.1:1/0"),
        ("rediss://gateway:p@ss@redis:6380/1", "rediss://gateway:***@redis:6380/1"),
        ("https://ghp_token@github.com/x", "https://***@github.com/x"),
        (
            "127.0.0.1:6379,db=0,password=s3cr3t,ssl=true",
            "127.0.0.1:6379,db=0,password=***,ssl=true",
        ),
        ("http://h/x?token=abc&k=1", "http://h/x?token=***&k=1"),
        (
            "http://127.0.0.1:8001/v1/recommendations/7",
            "http://127.0.0.1:8001/v1/recommendations/7",
        ),
        ("mail user@example.com", "mail user@example.com"),
        (  # cascade up logs tritonserver's command line (issue 19)
            "--http-restricted-api=model-repository,shared-memory:triton-admin-key=abc123 --x=1",
            "--http-restricted-api=model-repository,shared-memory:triton-admin-key=*** --x=1",
        ),
    ],
)
def test_redact(text: str, clean: str) -> None:
    assert redact(text) == clean
    assert redact_url(None) == "-"


def test_the_log_filter_masks_messages_arguments_and_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "Redis at %s failed", (URL,), None)
    try:
        raise ConnectionError(f"cannot reach {URL}")
    except ConnectionError:
        record.exc_info = sys.exc_info()
    RedactFilter().filter(record)
    line = logging.Formatter().format(record)
    assert SECRET not in line and "redis://:***@" in line
