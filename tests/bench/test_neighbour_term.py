"""neighbour_term: the screen runs end to end on tiny (the documented CLI trains the tower)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from cascade.bench.neighbour_term import recall_at_k


def test_recall_masks_seen_items_and_divides_by_the_smaller_of_k_and_relevant() -> None:
    scores = np.tile(np.arange(30, dtype=np.float32)[::-1], (2, 1))  # item 0 scores highest
    seen = [np.array([0]), np.array([], dtype=np.int64)]
    relevant = [np.array([0, 1]), np.array([25, 26, 27])]
    # row 0: item 0 is seen (masked), item 1 is in the top 20: 1/2; row 1: none in the top 20
    assert recall_at_k(scores, seen, relevant) == 0.25


def test_the_screen_prints_every_gamma_on_tiny(tmp_path: Path) -> None:
    env = {**os.environ, "CASCADE_HOME": str(tmp_path)}
    cascade = str(Path(sys.executable).with_name("cascade"))
    for args in (
        ["data", "-s", "synthetic:tiny"],
        ["train", "two-tower", "--data", "tiny", "--epochs", "1", "--no-progress"],
    ):
        subprocess.run([cascade, *args], env=env, check=True, capture_output=True, timeout=600)
    out = subprocess.run(
        [sys.executable, "-m", "cascade.bench.neighbour_term", "--data", "tiny"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    rows = dict(re.findall(r"^\| (.+?) \| (0\.\d{4}) \|$", out, flags=re.M))
    assert {"tower (with its prior)", "neighbour term alone", "tower + 1.6 x term"} <= set(rows)
    assert all(0.0 <= float(v) <= 1.0 for v in rows.values())
    # `cascade evaluate` reports the weights validation chose for the prior and the term
    subprocess.run(
        [cascade, "evaluate", "--dataset", "tiny", "--models", "two_tower"],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = json.loads((tmp_path / "reports" / "tiny" / "report.json").read_text())
    params = report["params"]["two_tower"]
    assert {"artifact", "prior_beta", "neighbour_gamma"} <= set(params)


def test_a_missing_data_set_or_tower_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from cascade.bench.neighbour_term import main

    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    assert main(["--data", "nosuch"]) == 2
    assert "no data set named 'nosuch'" in capsys.readouterr().err
    cascade = str(Path(sys.executable).with_name("cascade"))
    env = {**os.environ, "CASCADE_HOME": str(tmp_path)}
    subprocess.run(
        [cascade, "data", "-s", "synthetic:tiny"], env=env, check=True, capture_output=True
    )
    assert main(["--data", "tiny"]) == 2
    assert "cascade train two-tower" in capsys.readouterr().err
