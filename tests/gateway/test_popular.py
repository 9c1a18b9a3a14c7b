"""The popular tier read from real ALS artifacts (written by ``fallback_mf.artifacts.save_als``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fallback_mf.artifacts import save_als
from gateway.tiers.features import parse_row
from gateway.tiers.popular import PopularList
from tests.fallback_mf.test_service import tiny_model


def test_loads_latest_refreshes_and_skips_seen(tmp_path: Path) -> None:
    model = tiny_model(seed=1)
    save_als(model, artifacts_dir=tmp_path, version="v1")
    popular = PopularList(artifacts_dir=tmp_path)
    assert not popular.loaded
    assert popular.refresh() and popular.version == "v1"
    assert not popular.refresh()  # unchanged

    user = int(model.user_ids[0])
    seen = set(int(i) for i in popular.seen(user))
    assert seen == set(int(i) for i in model.item_ids[model.seen.row(0)])
    result = popular.recommend(user, k=5, exclude=[int(model.popular.items[0])])
    assert len(result.item_ids) == 5 and len(set(result.item_ids)) == 5
    assert not seen.intersection(result.item_ids)
    assert int(model.popular.items[0]) not in result.item_ids
    assert result.scores == sorted(result.scores, reverse=True)
    assert popular.known(result.item_ids).all()
    assert not popular.known([-1, 10**9]).any()
    assert result.model_version == "popular/v1"

    cold = popular.recommend(10**9, k=3, exclude=[])  # unknown user: plain popular order
    assert cold.item_ids == [int(i) for i in model.popular.items[:3]]

    save_als(tiny_model(seed=2), artifacts_dir=tmp_path, version="v2")
    assert popular.refresh() and popular.version == "v2"


def test_missing_artifacts_leave_it_unloaded(tmp_path: Path) -> None:
    popular = PopularList(artifacts_dir=tmp_path)
    assert not popular.refresh() and not popular.loaded
    assert popular.recommend(1, k=3, exclude=[]).item_ids == []
    assert popular.known([1, 2]).all()  # nothing to check against


def test_parse_row() -> None:
    assert (
        parse_row(
            5,
            {
                "age_bucket": None,
                "country": None,
                "interaction_count": None,
                "recent_items": None,
                "seen_items": None,
            },
        )
        is None
    )
    feats = parse_row(
        5,
        {
            "age_bucket": 2,
            "country": "FR",
            "interaction_count": 4,
            "recent_items": [3, 1],
            "seen_items": np.array([3, 1, 9]),
        },
    )
    assert feats is not None and feats.seen_items == (3, 1, 9) and feats.country == "FR"


def test_triton_inputs_follow_the_contract() -> None:
    import tritonclient.grpc as grpcclient

    from gateway.tiers.triton import build_inputs, input_arrays
    from gateway.tiers.types import UserFeatures
    from two_tower import contract

    feats = UserFeatures(
        user_id=3,
        age_bucket=1,
        country="FR",
        interaction_count=2,
        recent_items=(5, 6),
        seen_items=(5, 6, 7),
    )
    inputs = build_inputs(feats, k=10, exclude=[99], module=grpcclient)
    assert [i.name() for i in inputs] == [s.name for s in contract.INPUTS]
    for tensor, spec in zip(inputs, contract.INPUTS, strict=True):
        assert tensor.datatype() == spec.dtype
        assert tensor.shape() == [1, *spec.dims]
    # the store's seen list as it is (the tower reads it as history); exclusions apart
    arrays = input_arrays(feats, k=10, exclude=[99])
    assert arrays[contract.SEEN_ITEMS][0, :4].tolist() == [5, 6, 7, contract.PAD_ITEM]
    assert arrays[contract.EXCLUDE_ITEMS][0, :2].tolist() == [99, contract.PAD_ITEM]
