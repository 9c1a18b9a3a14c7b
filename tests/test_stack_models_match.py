"""``cascade up`` never serves a model trained on another data set (issue 19: ``SCALE=tiny make
up`` then ``make up`` served tiny's Two-Tower to the demo catalogue). Each artifact records the
data it was trained on; the stack compares it with the data set it serves."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cascade import stack_build
from cascade.runtime.paths import Layout
from two_tower import contract

DEMO = {"dataset": "demo", "checksum": "d" * 64}


def test_trained_on_all_of_the_served_data_matches() -> None:
    assert stack_build.trained_on({"data": {**DEMO, "split": None}}, DEMO) is None


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"dataset": "tiny", "checksum": "t" * 64, "split": None}, "'tiny'"),
        ({**DEMO, "split": {"test_fraction": 0.2}}, "a split of demo"),
        ({}, "checksum None"),
    ],
)
def test_other_data_a_split_or_no_record_do_not_match(data: dict, says: str) -> None:
    mismatch = stack_build.trained_on({"data": data}, DEMO)
    assert mismatch is not None and says in mismatch


def _als_version(root: Path, name: str, data: dict, *, categories: bool = True) -> None:
    version = root / "als" / name
    version.mkdir(parents=True)
    shapes = {"item_categories": [3]} if categories else {}
    (version / "metadata.json").write_text(json.dumps({"data": data, "shapes": shapes}))
    (root / "als" / "latest").write_text(name + "\n")


def test_als_trained_on_another_data_set_is_replaced_and_the_log_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    layout = Layout(home=tmp_path)
    _als_version(layout.artifacts_dir, "20260101T000000Z", {"dataset": "tiny", "checksum": "t"})
    with caplog.at_level(logging.WARNING):
        assert not stack_build._als_matches(layout, DEMO)
    assert "trained on 'tiny'" in caplog.text and "not 'demo'" in caplog.text


def test_als_trained_on_the_served_data_is_kept(tmp_path: Path) -> None:
    layout = Layout(home=tmp_path)
    _als_version(layout.artifacts_dir, "20260101T000000Z", {**DEMO, "split": None})
    assert stack_build._als_matches(layout, DEMO)


def test_als_without_item_categories_is_trained_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An ALS version trained before the category filter (no item_categories.npy) would make
    the gateway answer every filtered request 503: ``cascade up`` trains one (seconds)."""
    layout = Layout(home=tmp_path)
    _als_version(
        layout.artifacts_dir, "20260101T000000Z", {**DEMO, "split": None}, categories=False
    )
    with caplog.at_level(logging.WARNING):
        assert not stack_build._als_matches(layout, DEMO)
    assert "no item categories" in caplog.text


def test_the_newest_triton_version_is_checked_through_its_training_artifact(
    tmp_path: Path,
) -> None:
    layout = Layout(home=tmp_path)
    repository = tmp_path / "models"
    for version, artifact, data in [
        (1, "A", {**DEMO, "split": None}),
        (2, "B", {"dataset": "tiny", "checksum": "t", "split": None}),
    ]:
        folder = repository / "two_tower" / str(version)
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text(
            json.dumps({"artifact_version": artifact, "contract": contract.fingerprint()})
        )
        trained = layout.artifacts_dir / "two_tower" / artifact
        trained.mkdir(parents=True)
        (trained / "metadata.json").write_text(json.dumps({"data": data}))
    newest_is_tiny = stack_build._served_two_tower_mismatch(
        layout=layout, repository=repository, versions=[1, 2], serving=DEMO
    )
    assert newest_is_tiny is not None and "'tiny'" in newest_is_tiny
    assert (
        stack_build._served_two_tower_mismatch(
            layout=layout, repository=repository, versions=[1], serving=DEMO
        )
        is None
    )
    missing = stack_build._served_two_tower_mismatch(
        layout=Layout(home=tmp_path / "empty"), repository=repository, versions=[1], serving=DEMO
    )
    assert missing is not None and "cannot be read" in missing


def test_a_version_exported_for_another_contract_is_not_served(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "two_tower" / "1"
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"artifact_version": "A"}))  # before
    mismatch = stack_build._served_two_tower_mismatch(
        layout=Layout(home=tmp_path), repository=tmp_path / "models", versions=[1], serving=DEMO
    )
    assert mismatch is not None and "another Triton contract" in mismatch


def test_cascade_up_trains_a_quick_two_tower_to_start_serving(tmp_path: Path, monkeypatch) -> None:
    """With no matching artifact, `cascade up` trains UP_TWO_TOWER_EPOCHS epochs (minutes), not
    the default run to convergence (~40 CPU-minutes on demo), then exports what it trained."""
    import two_tower.export
    import two_tower.pipeline

    seen: dict[str, object] = {}

    def fake_train(*, layout, spec, split, params):
        seen.update(spec=spec, split=split, epochs=params.epochs)
        raise RuntimeError("stop here")  # the export is tested elsewhere

    monkeypatch.setattr(two_tower.pipeline, "run_train_two_tower", fake_train)
    monkeypatch.setattr(two_tower.export, "export_to_triton", lambda *a, **k: None)
    layout = Layout(home=tmp_path)
    with pytest.raises(RuntimeError, match="stop here"):
        stack_build._ensure_two_tower(
            layout=layout, dataset="demo", repository=tmp_path / "repo", serving=DEMO
        )
    assert seen == {"spec": "demo", "split": None, "epochs": stack_build.UP_TWO_TOWER_EPOCHS}
    assert stack_build.UP_TWO_TOWER_EPOCHS < 20
