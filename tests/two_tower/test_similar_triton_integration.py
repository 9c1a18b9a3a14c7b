"""A real tritonserver serving the exported ``two_tower_similar`` model, called by tritonclient
and by the gateway's own client and chain (issue 19).

Checks: the served top-k equals exact cosine top-k over the exported item embeddings and never
holds the query item; an unknown item gets the contract's INVALID_ARG error (the gateway's client
reads it as ``UnknownItem``) and the model stays ready; the gateway's similar chain serves it as
``two_tower``, and a Two-Tower export's version N is the similar model's version N.
"""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from gateway.metrics import GatewayMetrics
from gateway.resilience.breaker import CircuitBreaker
from gateway.resilience.chain import ChainConfig
from gateway.schemas import Tier
from gateway.similar import SimilarChain
from gateway.tiers.popular import PopularList
from gateway.tiers.similar_triton import TritonSimilar
from gateway.tiers.similar_types import UnknownItem
from two_tower import similar_contract as sc
from two_tower.export import TEMPLATE_NAME, export_to_triton, model_dir
from two_tower.similar_export import model_dir as similar_dir
from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY, TritonProcess, TritonSettings

pytestmark = pytest.mark.integration
K = 8


@pytest.fixture(scope="module")
def server(tiny_trained, tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton_similar_repo")
    model_dir(repo).mkdir()
    shutil.copy(
        model_dir(DEFAULT_MODEL_REPOSITORY) / TEMPLATE_NAME, model_dir(repo) / TEMPLATE_NAME
    )
    export_to_triton(tiny_trained, repository=repo)
    proc = TritonProcess(
        TritonSettings(
            model_repository=repo,
            backends_dir=tmp_path_factory.mktemp("backends"),
            http_port=0,
            grpc_port=0,
            metrics_port=0,
            otlp_endpoint=None,
        ),
        log_path=repo / "tritonserver.log",
    )
    proc.start()
    try:
        proc.wait_ready(timeout=180)
        proc.wait_ready(f"http://{proc.http_url}{sc.ready_path()}", timeout=120)
        yield proc
    finally:
        proc.stop()


def expected_top(repo, item_id: int, k: int) -> tuple[list[int], np.ndarray]:
    folder = similar_dir(repo) / "1"
    ids = np.load(folder / "item_ids.npy")
    emb = np.load(folder / "item_embeddings.npy").astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pos = int(np.searchsorted(ids, item_id))
    scores = emb @ emb[pos]
    scores[pos] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order].tolist(), scores[order]


def infer(server, item_ids: list[int], ks: list[int]):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        item = grpcclient.InferInput(sc.ITEM_ID, [len(item_ids), 1], "INT64")
        item.set_data_from_numpy(np.asarray(item_ids, np.int64).reshape(-1, 1))
        k = grpcclient.InferInput(sc.K, [len(ks), 1], "INT32")
        k.set_data_from_numpy(np.asarray(ks, np.int32).reshape(-1, 1))
        result = client.infer(sc.MODEL_NAME, [item, k])
        return result.as_numpy(sc.ITEM_IDS), result.as_numpy(sc.SCORES)
    finally:
        client.close()


def test_the_export_wrote_the_same_version_for_both_models(server) -> None:
    repo = server.settings.model_repository
    assert sorted(p.name for p in similar_dir(repo).iterdir() if p.name.isdigit()) == ["1"]
    assert server.model_ready(sc.MODEL_NAME)


def test_served_top_k_is_exact_cosine_and_never_the_item(server, tiny_trained) -> None:
    repo = server.settings.model_repository
    items = np.asarray(tiny_trained.item_ids, dtype=np.int64)
    sample = [int(i) for i in np.random.default_rng(0).choice(items, size=6, replace=False)]
    ids, scores = infer(server, sample, [K] * len(sample))
    assert ids.shape == (len(sample), K) and scores.dtype == np.float32
    for row, item in enumerate(sample):
        want_ids, want_scores = expected_top(repo, item, K)
        assert item not in ids[row].tolist()
        np.testing.assert_allclose(scores[row], want_scores, rtol=1e-4, atol=1e-5)
        assert ids[row].tolist() == want_ids
        assert ((scores[row] >= -1.0001) & (scores[row] <= 1.0001)).all()


def test_per_row_k_pads_the_tail(server, tiny_trained) -> None:
    item = int(tiny_trained.item_ids[0])
    ids, scores = infer(server, [item, item], [2, K])
    assert (ids[0, 2:] == -1).all() and np.isneginf(scores[0, 2:]).all()
    assert ids[0, :2].tolist() == ids[1, :2].tolist()


def test_the_gateway_client_and_chain_serve_it(server, tiny_trained) -> None:
    items = [int(i) for i in tiny_trained.item_ids]
    unknown = max(items) + 1000

    async def scenario():
        client = TritonSimilar(url=server.grpc_url)
        try:
            assert await client.ready()
            answer = await client.similar(items[3], k=5, timeout_s=5.0)
            with pytest.raises(UnknownItem):
                await client.similar(unknown, k=5, timeout_s=5.0)
            popular = PopularList.from_arrays(items=items, counts=[1] * len(items))
            chain = SimilarChain(
                # generous budgets: the loaded 2-core CI machine, not latency, is not under test
                config=ChainConfig(deadline_s=10.0, primary_timeout_s=5.0, mf_timeout_s=1.0),
                popular=popular,
                breaker=CircuitBreaker(name="similar"),
                metrics=GatewayMetrics(),
                primary=client,
            )
            outcome = await chain.similar(item_id=items[3], k=5)
            return answer, outcome
        finally:
            await client.close()

    answer, outcome = asyncio.run(scenario())
    repo = server.settings.model_repository
    assert answer.item_ids == expected_top(repo, items[3], 5)[0]
    assert items[3] not in answer.item_ids and answer.model_version == f"{sc.MODEL_NAME}/1"
    assert outcome.tier is Tier.TWO_TOWER and outcome.reason is None
    assert outcome.result.item_ids == answer.item_ids
    assert server.model_ready(sc.MODEL_NAME)  # the unknown item did not hurt it
