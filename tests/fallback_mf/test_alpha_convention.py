"""`--alpha` against implicit's own alpha: what the help text promises holds on 0/1 data."""

from __future__ import annotations

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from cascade.cli import app
from fallback_mf.train import interaction_matrix, train_als


def _interactions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    draws = zip(rng.integers(0, 60, 900), rng.integers(0, 40, 900), strict=True)
    pairs = {(int(u), int(i)) for u, i in draws}
    users, items = zip(*sorted(pairs), strict=True)
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.arange(len(users))})


def test_implicit_alpha_a_is_cascade_alpha_a_minus_1_on_binary_data() -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    frame = _interactions()
    ours = train_als(
        interactions=frame,
        factors=8,
        regularization=0.05,
        alpha=9.0,
        iterations=3,
        threads=1,
        progress=False,
    )
    matrix, _, _ = interaction_matrix(frame, confidence="count")
    assert set(np.unique(matrix.data)) == {1.0}  # one row per pair: r is 0/1
    theirs = AlternatingLeastSquares(
        factors=8,
        regularization=0.05,
        alpha=10.0,
        iterations=3,
        num_threads=1,
        random_state=42,
        dtype=np.float32,
    )
    theirs.fit(matrix, show_progress=False)
    np.testing.assert_allclose(ours.user_factors, theirs.user_factors, rtol=1e-4, atol=1e-5)


def test_alpha_help_says_how_to_convert() -> None:
    result = CliRunner().invoke(app, ["train", "mf", "--help"], env={"COLUMNS": "300"})
    text = " ".join(result.output.split())
    assert "c = 1 + alpha * r" in text and "its alpha A is --alpha A-1 here" in text
