"""`--version` for the Two-Tower: a pinned artifact trained on other data is refused by name.

The artifact is a metadata file only: the refusal happens before any weights are read, so no
training is needed to show it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cascade.evaluation.model_data import ModelData, ModelUnavailable
from cascade.evaluation.split import SplitParams
from cascade.runtime.paths import Layout
from two_tower import feature_settings
from two_tower.artifacts import FORMAT_VERSION, root_dir
from two_tower.recommender import load_two_tower


def _data() -> ModelData:
    return ModelData(
        name="demo", spec="demo", checksum="a" * 64, split=SplitParams(), train=pd.DataFrame()
    )


def test_a_pinned_version_of_other_data_is_refused(tmp_path):
    layout = Layout(home=tmp_path)
    folder = root_dir(layout.artifacts_dir) / "20261204T000000Z"
    folder.mkdir(parents=True)
    other = {"dataset": "demo", "checksum": "b" * 64, "split": None}
    meta = {"format_version": FORMAT_VERSION, "data": other}
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelUnavailable) as err:
        load_two_tower(layout=layout, dataset=_data(), version="20261204T000000Z")
    assert str(err.value) == (
        "Two-Tower version 20261204T000000Z cannot be used: it was trained on demo (full data, "
        "checksum bbbbbbbbbbbb), not on demo (train split, checksum aaaaaaaaaaaa)"
    )
    with pytest.raises(ModelUnavailable, match=r"no Two-Tower version 'nope' in .*: 20261204"):
        load_two_tower(layout=layout, dataset=_data(), version="nope")


def test_an_artifact_trained_with_other_feature_settings_is_refused(tmp_path, caplog):
    layout = Layout(home=tmp_path)
    data = _data()
    features = {**feature_settings.current(), "recent_items_len": 10}
    for name in ("20261204T000000Z", "20261205T000000Z"):
        folder = root_dir(layout.artifacts_dir) / name
        folder.mkdir(parents=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "data": data.data_metadata(),
            "features": features,
        }
        (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelUnavailable) as err:
        load_two_tower(layout=layout, dataset=data, version="20261204T000000Z")
    assert str(err.value) == (
        "Two-Tower artifact 20261204T000000Z was trained with other feature settings: "
        "recent_items_len 10 (this build: 20). Retrain it with this build: "
        "`cascade train two-tower`"
    )
    # without --version, each mismatching artifact is skipped with that reason, then none is left
    with pytest.raises(ModelUnavailable, match="no Two-Tower artifact trained on demo"):
        load_two_tower(layout=layout, dataset=data)
    assert caplog.text.count("was trained with other feature settings") == 2


def test_feature_settings_check() -> None:
    feature_settings.check({"features": feature_settings.current()}, what="x")  # the same: fine
    renamed = {**feature_settings.current(), "features": ["user_profile:age"]}
    with pytest.raises(feature_settings.FeatureSettingsMismatch, match="features"):
        feature_settings.check({"features": renamed}, what="x")
    with pytest.raises(feature_settings.FeatureSettingsMismatch, match="not readable"):
        feature_settings.check({"features": "v1"}, what="x")
