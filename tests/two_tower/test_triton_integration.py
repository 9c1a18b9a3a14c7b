"""A real tritonserver on an exported tiny model, called over HTTP and gRPC.

Checks: the served top-k equals the offline model's top-k for sampled users, with and without a
request's ``exclude_items`` (excluded, and not read as history); the category filter is applied
inside the top-k (the served answer is the offline ranking restricted to the allowed categories,
k items long); a version exported without item categories refuses a filtered request; bad input
gets a clear Triton error (400) and the model stays ready.

Two versions are exported: 1 without item categories (as an artifact trained before the filter
exports), 2 with them (the newest, which requests without a version get). Both carry a
recent-popularity prior (``item_bias``, ``two_tower.item_prior``) large enough to reorder the
top-k, and an item-neighbour term (``two_tower.item_neighbours``, scripted to
``item_neighbours.pt``) weighted to reorder it too, so "served equals offline" also proves
Triton adds both.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from cascade.data.features import user_state
from tests.contract import contract_category
from two_tower import contract
from two_tower.export import TEMPLATE_NAME, export_to_triton, model_dir
from two_tower.item_neighbours import build_neighbours
from two_tower.recommender import TwoTowerRecommender
from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY, TritonProcess, TritonSettings

pytestmark = pytest.mark.integration
K = 10


@pytest.fixture(scope="module")
def served(tiny_trained, tiny_interactions):
    """The tiny model with a prior and a neighbour term that reorder its rankings (see the
    module docstring)."""
    bias = np.random.default_rng(3).normal(0.0, 0.3, len(tiny_trained.item_ids))
    neighbours = build_neighbours(tiny_interactions, tiny_trained.item_ids)
    return dataclasses.replace(
        tiny_trained, item_bias=bias.astype(np.float32), neighbours=neighbours, neighbour_gamma=0.5
    )


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton_repo")
    model_dir(repo).mkdir()
    shutil.copy(
        model_dir(DEFAULT_MODEL_REPOSITORY) / TEMPLATE_NAME, model_dir(repo) / TEMPLATE_NAME
    )
    export_to_triton(dataclasses.replace(served, item_categories=None), repository=repo)
    export_to_triton(_with_categories(served), repository=repo)
    settings = TritonSettings(
        model_repository=repo,
        backends_dir=tmp_path_factory.mktemp("backends"),
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        otlp_endpoint=None,
    )
    proc = TritonProcess(settings, log_path=repo / "tritonserver.log")
    proc.start()
    try:
        proc.wait_ready(timeout=180)
        yield proc
    finally:
        proc.stop()


def _with_categories(trained):
    names = np.asarray([contract_category(i) for i in trained.item_ids], dtype=str)
    return dataclasses.replace(trained, item_categories=names)


def _wire_rows(state, users):
    """The contract's inputs for ``users`` from their state (what the gateway reads from Feast)."""
    table = state.set_index("user_id").loc[users]
    n = len(users)
    return {
        contract.USER_ID: np.asarray(users, np.int64).reshape(n, 1),
        contract.AGE_BUCKET: np.full((n, 1), -1, np.int64),
        contract.COUNTRY: np.zeros((n, 1), np.int64),
        contract.INTERACTION_COUNT: table["interaction_count"].to_numpy(np.int64).reshape(n, 1),
        contract.RECENT_ITEMS: np.array(
            [contract.pad_items(list(r), contract.RECENT_ITEMS_LEN) for r in table["recent_items"]],
            np.int64,
        ),
        contract.SEEN_ITEMS: np.array(
            [contract.pad_items(list(r), contract.MAX_SEEN_ITEMS) for r in table["seen_items"]],
            np.int64,
        ),
        contract.EXCLUDE_ITEMS: np.full((n, contract.MAX_EXCLUDE_ITEMS), -1, np.int64),
        contract.K: np.full((n, 1), K, np.int32),
        contract.INCLUDE_CATEGORIES: np.full((n, contract.MAX_FILTER_CATEGORIES), -1, np.int64),
        contract.EXCLUDE_CATEGORIES: np.full((n, contract.MAX_FILTER_CATEGORIES), -1, np.int64),
    }


def _codes(n, names):
    return np.array([contract.pad_codes(names)] * n, np.int64)


def _infer(module, client, arrays, dtypes=None, version=""):
    inputs = []
    for spec in contract.INPUTS:
        array = arrays[spec.name]
        dtype = (dtypes or {}).get(spec.name, spec.dtype)
        tensor = module.InferInput(spec.name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(contract.MODEL_NAME, inputs, model_version=version)
    return result.as_numpy(contract.ITEM_IDS), result.as_numpy(contract.SCORES)


@pytest.fixture(scope="module")
def offline(served, tiny_interactions):
    rec = TwoTowerRecommender.from_trained(served, interactions=tiny_interactions)
    return rec, user_state(tiny_interactions)


@pytest.fixture(params=["http", "grpc"])
def client(request, server):
    if request.param == "http":
        import tritonclient.http as module

        c = module.InferenceServerClient(server.http_url)
    else:
        import tritonclient.grpc as module

        c = module.InferenceServerClient(server.grpc_url)
    yield module, c
    c.close()


def test_served_top_k_equals_offline_top_k(client, offline, served, tiny_interactions):
    module, c = client
    rec, state = offline
    users = np.random.default_rng(0).choice(state["user_id"].to_numpy(), size=12, replace=False)
    ids, scores = _infer(module, c, _wire_rows(state, users))
    expected_ids, expected_scores = rec.recommend(users, k=K)
    assert ids.shape == (len(users), K) and ids.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    plain = TwoTowerRecommender.from_trained(
        dataclasses.replace(served, item_bias=None), interactions=tiny_interactions
    )
    assert not np.array_equal(plain.recommend(users, k=K)[0], ids)  # the prior was applied
    no_term = TwoTowerRecommender.from_trained(
        dataclasses.replace(served, neighbours=None), interactions=tiny_interactions
    )
    assert not np.array_equal(no_term.recommend(users, k=K)[0], ids)  # the term was applied


def test_excluded_items_are_masked_and_not_history(client, offline):
    """Excluding a user's top 3 gives the offline answer with the same exclusion: the other
    items keep their scores, so the exclusions did not change the user vector."""
    module, c = client
    rec, state = offline
    users = state["user_id"].to_numpy()[:3]
    plain, _ = rec.recommend(users, k=K)
    exclude = [row[:3] for row in plain]
    arrays = _wire_rows(state, users)
    arrays[contract.EXCLUDE_ITEMS] = np.array(
        [contract.pad_items(list(e), contract.MAX_EXCLUDE_ITEMS) for e in exclude], np.int64
    )
    ids, scores = _infer(module, c, arrays)
    expected_ids, expected_scores = rec.recommend(users, k=K, exclude=exclude)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)


def test_per_row_k_pads_and_seen_items_are_excluded(client, offline):
    module, c = client
    _, state = offline
    users = state["user_id"].to_numpy()[:2]
    arrays = _wire_rows(state, users)
    arrays[contract.K] = np.array([[3], [K]], np.int32)
    ids, scores = _infer(module, c, arrays)
    assert ids.shape == (2, K)
    assert (ids[0, 3:] == -1).all() and np.isneginf(scores[0, 3:]).all()
    for row in range(2):
        assert not set(ids[row][ids[row] >= 0]) & set(arrays[contract.SEEN_ITEMS][row])


@pytest.mark.parametrize(
    ("include", "exclude"), [(["g1"], []), ([], ["g0", "g2"]), (["g0", "g1"], ["g0"])]
)
def test_the_category_filter_is_applied_inside_the_top_k(client, offline, include, exclude):
    """The served answer is the offline ranking restricted to the allowed categories: k items
    (the contract frame has 10 per category), not the unfiltered top-k minus the others."""
    module, c = client
    rec, state = offline
    users = state["user_id"].to_numpy()[1:5]  # not the greedy user 0
    arrays = _wire_rows(state, users)
    arrays[contract.INCLUDE_CATEGORIES] = _codes(len(users), include)
    arrays[contract.EXCLUDE_CATEGORIES] = _codes(len(users), exclude)
    arrays[contract.K] = np.full((len(users), 1), 5, np.int32)
    ids, scores = _infer(module, c, arrays)
    full_ids, full_scores = rec.recommend(users, k=30)
    for row in range(len(users)):
        inside = [
            (int(i), float(s))
            for i, s in zip(full_ids[row], full_scores[row], strict=True)
            if i >= 0
            and (not include or contract_category(i) in include)
            and contract_category(i) not in exclude
        ]
        want = inside[:5]
        assert len(want) == 5, "too few allowed items for this check"
        assert ids[row].tolist() == [i for i, _ in want]
        np.testing.assert_allclose(scores[row], [s for _, s in want], rtol=1e-5, atol=1e-6)


def test_an_unknown_category_leaves_nothing_and_mixed_rows_keep_their_own_filter(client, offline):
    module, c = client
    _, state = offline
    users = state["user_id"].to_numpy()[1:3]
    arrays = _wire_rows(state, users)
    arrays[contract.INCLUDE_CATEGORIES] = np.array(
        [contract.pad_codes(["no-such"]), contract.pad_codes([])], np.int64
    )
    ids, scores = _infer(module, c, arrays)
    assert (ids[0] == -1).all() and np.isneginf(scores[0]).all()
    assert (ids[1] >= 0).all()


def test_a_version_without_item_categories_refuses_a_filter(client, offline, server):
    from tritonclient.utils import InferenceServerException

    module, c = client
    _, state = offline
    arrays = _wire_rows(state, state["user_id"].to_numpy()[1:2])
    ids, _ = _infer(module, c, arrays, version="1")  # no filter: served as before
    assert (ids >= 0).all()
    arrays[contract.INCLUDE_CATEGORIES] = _codes(1, ["g1"])
    with pytest.raises(InferenceServerException, match="without item categories"):
        _infer(module, c, arrays, version="1")
    assert server.model_ready()


def _bad_cases(state):
    users = state["user_id"].to_numpy()[:2]
    base = _wire_rows(state, users)
    k0 = dict(base, k=np.zeros((2, 1), np.int32))
    k_big = dict(base, k=np.full((2, 1), contract.MAX_K + 1, np.int32))
    neg_user = dict(base, user_id=np.array([[-5], [1]], np.int64))
    bad_item = dict(base, seen_items=np.full((2, contract.MAX_SEEN_ITEMS), -7, np.int64))
    bad_exclude = dict(base, exclude_items=np.full((2, contract.MAX_EXCLUDE_ITEMS), -7, np.int64))
    short = dict(base, recent_items=base[contract.RECENT_ITEMS][:, :5].copy())
    wrong_dtype = dict(base, user_id=base[contract.USER_ID].astype(np.int32))
    bad_code = dict(
        base, include_categories=np.full((2, contract.MAX_FILTER_CATEGORIES), -3, np.int64)
    )
    return [
        (bad_code, None, "invalid category code in include_categories"),
        (k0, None, "out of range"),
        (k_big, None, "out of range"),
        (neg_user, None, "invalid user_id"),
        (bad_item, None, "invalid item id"),
        (bad_exclude, None, "invalid item id in exclude_items"),
        (short, None, "recent_items"),
        (wrong_dtype, {contract.USER_ID: "INT32"}, "data-type"),
    ]


def test_bad_input_gets_clear_error_and_model_stays_ready(client, offline, server):
    from tritonclient.utils import InferenceServerException

    module, c = client
    _, state = offline
    for arrays, dtypes, message in _bad_cases(state):
        with pytest.raises(InferenceServerException, match=message):
            _infer(module, c, arrays, dtypes)
        assert server.model_ready()
    ids, _ = _infer(module, c, _wire_rows(state, state["user_id"].to_numpy()[:1]))
    assert ids.shape == (1, K)


def test_repository_api_is_restricted(server):
    import tritonclient.http as module
    from tritonclient.utils import InferenceServerException

    c = module.InferenceServerClient(server.http_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            c.unload_model(contract.MODEL_NAME)
        assert server.model_ready()
    finally:
        c.close()


def test_the_export_writes_a_manifest_that_verifies(server):
    # Written inside the temporary folder before the rename: no reader sees a version without it.
    from two_tower.manifest import verify_model

    assert verify_model(model_dir(server.settings.model_repository)) == [1, 2]


def test_the_gateway_client_sends_a_batch_as_the_rows_of_one_request(server, offline, served):
    """``TritonPrimary.recommend_many`` (the batch route): 100 rows in one request (the
    contract's max_batch_size is 128), each with its own k, exclusions and category filter,
    each row equal to that user's single-row answer."""
    import asyncio

    from gateway.tiers.triton import TritonPrimary
    from gateway.tiers.types import CategoryFilter, PrimaryRow, UserFeatures

    _, state = offline
    table = state.set_index("user_id")
    users = [int(u) for u in state["user_id"].to_numpy()[1:]]
    rows = []
    for i in range(100):
        user = users[i % len(users)]
        feats = UserFeatures(
            user_id=user,
            interaction_count=int(table.loc[user, "interaction_count"]),
            recent_items=tuple(int(x) for x in table.loc[user, "recent_items"]),
            seen_items=tuple(int(x) for x in table.loc[user, "seen_items"]),
        )
        categories = CategoryFilter.of(["g1"]) if i % 3 == 0 else CategoryFilter()
        rows.append(PrimaryRow(feats, 2 + i % 5, (100,) if i % 2 else (), categories))

    async def main():
        primary = TritonPrimary(url=server.grpc_url.removeprefix("grpc://"))
        try:
            batch = await primary.recommend_many(rows, timeout_s=30)
            singles = [
                await primary.recommend(
                    r.features, k=r.k, exclude=r.exclude, timeout_s=30, categories=r.categories
                )
                for r in rows[:12]
            ]
            return batch, singles
        finally:
            await primary.close()

    batch, singles = asyncio.run(main())
    assert len(batch) == 100 and all(not isinstance(a, Exception) for a in batch)
    catalogue = {int(i) for i in served.item_ids}
    for i, (row, answer) in enumerate(zip(rows, batch, strict=True)):
        allowed = {
            x
            for x in catalogue - set(row.features.seen_items) - set(row.exclude)
            if not row.categories or contract_category(x) == "g1"
        }
        assert len(answer.item_ids) == min(row.k, len(allowed))  # fewer only when they run out
        assert set(answer.item_ids) <= allowed
        if row.categories:
            assert {contract_category(x) for x in answer.item_ids} == {"g1"}
        if i < len(singles):
            assert answer.item_ids == singles[i].item_ids
            np.testing.assert_allclose(answer.scores, singles[i].scores, rtol=1e-5, atol=1e-6)
