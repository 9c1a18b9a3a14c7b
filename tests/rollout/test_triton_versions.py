"""Two versions side by side on a real tritonserver: the gateway's Triton client addresses each
by number and the answer says which one served; a version Triton does not serve is a tier
error, never a silent answer from another version."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.errors import UpstreamError
from gateway.tiers.triton import TritonPrimary
from gateway.tiers.types import UserFeatures
from tests.contract import contract_interactions
from tests.two_tower.conftest import TINY
from two_tower.export import TEMPLATE_NAME, export_to_triton, model_dir
from two_tower.triton_config import write_configs
from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY, TritonProcess, TritonSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    from two_tower.pipeline import train_in_memory

    trained = train_in_memory(contract_interactions(), params=TINY)
    repo: Path = tmp_path_factory.mktemp("triton_versions")
    folder = model_dir(repo)
    folder.mkdir()
    shutil.copy(model_dir(DEFAULT_MODEL_REPOSITORY) / TEMPLATE_NAME, folder / TEMPLATE_NAME)
    export_to_triton(trained, repository=repo, keep=3)
    export_to_triton(trained, repository=repo, keep=3)
    export_to_triton(trained, repository=repo, keep=3)
    # version 2 answers differently from version 1: its item embeddings reversed
    emb = np.load(folder / "2" / "item_embeddings.npy")
    np.save(folder / "2" / "item_embeddings.npy", np.ascontiguousarray(emb[::-1]))
    write_configs(folder, versions=[1, 2])  # 3 exists on disk but is not served
    proc = TritonProcess(
        TritonSettings(model_repository=repo, backends_dir=tmp_path_factory.mktemp("backends"),
                       http_port=0, grpc_port=0, metrics_port=0, otlp_endpoint=None),
        log_path=repo / "tritonserver.log",
    )  # fmt: skip
    proc.start()
    try:
        proc.wait_ready(timeout=180)
        yield proc
    finally:
        proc.stop()


def test_each_version_addressed_and_named(triton: TritonProcess) -> None:
    async def main() -> dict[int | None, tuple[str, list[int]]]:
        client = TritonPrimary(url=triton.grpc_url)
        features = UserFeatures(user_id=1, interaction_count=1, seen_items=(0,))
        try:
            out = {}
            for version in (1, 2, None):
                r = await client.recommend(
                    features, k=3, exclude=[], timeout_s=5.0, version=version
                )
                out[version] = (r.model_version, r.item_ids)
            with pytest.raises(UpstreamError, match="triton error"):
                await client.recommend(features, k=3, exclude=[], timeout_s=5.0, version=3)
            return out
        finally:
            await client.close()

    out = asyncio.run(main())
    assert out[1][0] == "two_tower/1" and out[2][0] == "two_tower/2"
    assert out[None][0] == "two_tower/2"  # no version named: Triton's newest served one
    assert out[1][1] != out[2][1]  # two different models answered
