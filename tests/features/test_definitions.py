"""feature_repo/definitions.py agrees with cascade.runtime.feature_names, for both ways it is used."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from feast import Entity, FeatureService, FeatureView

from cascade.features import store
from cascade.runtime import feature_names as names


def test_definitions_match_names(tmp_path: Path) -> None:
    module = store._load_definitions_module()
    objects = module.definitions(tmp_path)
    views = {o.name: o for o in objects if isinstance(o, FeatureView)}
    assert set(views) == set(names.VIEW_FEATURES)
    for name, view in views.items():
        assert tuple(f.name for f in view.features) == names.VIEW_FEATURES[name]
        user_view = names.VIEW_JOIN_KEYS[name] == names.USER_JOIN_KEY
        assert view.entities == [names.USER_ENTITY if user_view else names.ITEM_ENTITY]
        ttl_days = {
            names.USER_PROFILE: names.USER_PROFILE_TTL_DAYS,
            names.USER_ACTIVITY: names.USER_ACTIVITY_TTL_DAYS,
            names.ITEM_FEATURES: names.ITEM_FEATURES_TTL_DAYS,  # 0: no TTL (rows on change)
        }[name]
        assert view.ttl == timedelta(days=ttl_days)
        assert view.batch_source.path == str(tmp_path.resolve() / names.VIEW_FILES[name])
    entities = {o.name: o.join_key for o in objects if isinstance(o, Entity)}
    assert entities == {
        names.USER_ENTITY: names.USER_JOIN_KEY,
        names.ITEM_ENTITY: names.ITEM_JOIN_KEY,
    }
    services = {o.name: o for o in objects if isinstance(o, FeatureService)}

    def refs(service: FeatureService) -> list[str]:
        return [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]

    assert refs(services[names.TWO_TOWER_SERVICE]) == names.TWO_TOWER_FEATURES
    assert refs(services[names.ALS_SERVICE]) == names.ALS_FEATURES


def test_module_objects_follow_env_for_plain_feast_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASCADE_FEATURES_DIR", str(tmp_path))
    module = store._load_definitions_module()
    assert module.user_activity.batch_source.path == str(tmp_path / "user_activity.parquet")
    assert module.two_tower_v1.name == names.TWO_TOWER_SERVICE
