"""The MF service on real artifacts through its default loader (a numpy-only ``AlsScorer``):
the same answers as the trained ``AlsModel``, a symlinked ``latest``, a tampered artifact refused,
and a service process that never imports pandas, torch or the training code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fallback_mf.artifact_format import read_checked
from fallback_mf.artifacts import als_root, save_als
from fallback_mf.service.main import create_app
from fallback_mf.service.scoring import AlsScorer
from fallback_mf.service.settings import MfSettings
from tests.fallback_mf.service_helpers import N_ITEMS, AppClient, scorer_of, tiny_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def artifacts_dir(tmp_path: Path) -> Path:
    save_als(tiny_model(seed=1), artifacts_dir=tmp_path, version="v1")
    return tmp_path


def test_scorer_answers_like_the_batch_model(artifacts_dir: Path) -> None:
    """The scorer built from disk against ``AlsModel.recommend`` (batch ``top_k``,
    ``PopularityRecommender``; minus its padding): the one single-user path the service has."""
    model = tiny_model(seed=1)
    scorer = AlsScorer.from_arrays(read_checked(als_root(artifacts_dir) / "v1")[0])
    assert (scorer.n_users, scorer.n_items) == (model.n_users, model.n_items)
    rng = np.random.default_rng(0)
    for user in [*model.user_ids.tolist(), 5, 10**15]:  # every known user, two unknown ones
        for k in (1, 7, N_ITEMS + 5):
            exclude = np.append(rng.choice(model.item_ids, size=3), 99_999)
            items, scores = scorer.recommend_one(user, k=k, exclude=exclude.tolist())
            batch_items, batch_scores = model.recommend(np.array([user]), k=k, exclude=[exclude])
            valid = batch_items[0] >= 0
            assert items == batch_items[0][valid].tolist()
            np.testing.assert_allclose(scores, batch_scores[0][valid], rtol=1e-5, atol=1e-5)
    users = np.array([100, 5, 111], dtype=np.int64)
    np.testing.assert_array_equal(scorer.user_positions(users), model.user_positions(users))
    with pytest.raises(ValueError, match="k must be >= 1"):
        scorer.recommend_one(100, k=0)


def test_default_loader_serves_the_artifact(artifacts_dir: Path) -> None:
    model = tiny_model(seed=1)
    settings = MfSettings(artifacts_dir=als_root(artifacts_dir), reload_interval_s=0)
    with AppClient(create_app(settings)) as client:
        assert isinstance(client.app.state.store.current.model, AlsScorer)
        for user, known in ((103, True), (5, False)):
            r = client.get(f"/v1/recommendations/{user}", params={"k": 6, "exclude": "1001"})
            body = r.json()
            assert r.status_code == 200 and body["known_user"] is known
            items, scores = scorer_of(model).recommend_one(user, k=6, exclude=[1001])
            assert [i["item_id"] for i in body["items"]] == items
            assert [i["score"] for i in body["items"]] == pytest.approx(scores)
        text = client.get("/metrics").text
        assert "mf_model_items 40.0" in text and "mf_model_users 12.0" in text


def test_follows_a_symlinked_latest_and_refuses_a_tampered_artifact(artifacts_dir: Path) -> None:
    root = als_root(artifacts_dir)
    save_als(tiny_model(seed=2), artifacts_dir=artifacts_dir, version="v2", update_latest=False)
    settings = MfSettings(artifacts_dir=root, reload_interval_s=0, reload_min_interval_s=0)
    with AppClient(create_app(settings)) as client:
        (root / "latest").unlink()
        (root / "latest").symlink_to("v2")
        r = client.post("/admin/reload")
        assert r.status_code == 200 and r.json()["model_version"] == "v2"
        meta = json.loads((root / "v1" / "metadata.json").read_text())
        meta["id_map_sha256"] = "0" * 64
        (root / "v1" / "metadata.json").write_text(json.dumps(meta))
        r = client.post("/admin/reload", json={"version": "v1"})
        assert r.status_code == 409 and "id maps do not match" in r.json()["detail"]
        assert client.get("/readyz").json()["model_version"] == "v2"


_LIGHT = """
import asyncio, json, sys
from pathlib import Path
from fallback_mf.service.main import create_app
from fallback_mf.service.settings import MfSettings
app = create_app(MfSettings(artifacts_dir=Path(sys.argv[1]), reload_interval_s=0))
async def main():
    async with app.router.lifespan_context(app):
        app.state.store.current.recommend(103, k=5, exclude=())
asyncio.run(main())
heavy = ("pandas", "torch", "scipy", "implicit", "pyarrow", "cascade.recommenders",
         "fallback_mf.model", "fallback_mf.artifacts", "fallback_mf.train")
print(json.dumps([m for m in heavy if m in sys.modules]))
"""


def test_service_process_imports_no_pandas_or_torch(artifacts_dir: Path) -> None:
    """Building the app, loading a real artifact and answering: no training stack imported."""
    result = subprocess.run(
        [sys.executable, "-c", _LIGHT, str(als_root(artifacts_dir))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
