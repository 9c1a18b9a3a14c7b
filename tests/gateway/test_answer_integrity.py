"""Answer integrity at the tier boundaries: whatever Triton or the MF service send, the adapter
(plus the chain's check, ``gateway.tiers.validation``) yields an answer that follows every rule, or a
tier error (``UpstreamError``); never another exception.

The upstreams are replaced at the wire: Triton by a gRPC ``ModelInferResponse`` built here (any
output names, datatypes, shapes and bytes), the MF service by an httpx mock transport (any
status, content type and body), because a real server cannot be made to send every malformed
answer. ``tests/integration/test_broken_model.py`` runs a real broken model in real Triton.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from gateway.errors import UpstreamError
from gateway.tiers.mf import MfFallback
from gateway.tiers.triton import TritonPrimary
from gateway.tiers.types import TierResult, UserFeatures
from gateway.tiers.validation import InvalidAnswer, Rule, check_answer, decode_triton, from_lists
from tests.gateway.fakes import CATALOGUE, popular_list

POPULAR = popular_list()
SKIP = {0, 1, 2}
TRITON_DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
NASTY_NUMBERS = [
    0,
    -1,
    -2,
    3,
    199,
    200,
    2**31,
    2**63 - 1,
    -(2**63),
    float("nan"),
    float("inf"),
    float("-inf"),
    1e30,
    -0.0,
    42.5,
]
HYPOTHESIS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def assert_follows_every_rule(result: TierResult, *, k: int, skip: set[int]) -> None:
    items, scores = result.item_ids, result.scores
    assert len(items) == len(scores) == k  # the catalogue (200) never runs out here
    assert all(type(i) is int for i in items) and len(set(items)) == k
    assert not skip.intersection(items) and set(items) <= set(CATALOGUE)
    assert all(type(s) is float and math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)


# -- Triton ----------------------------------------------------------------------------------


def _tensor(dtype: str, values: list[float], shape: list[int]) -> bytes:
    with np.errstate(all="ignore"):
        array = np.array(values, dtype=np.float64).astype(TRITON_DTYPES[dtype])
    return array.tobytes()


@st.composite
def triton_output(draw: st.DrawFn, k: int) -> tuple[str, str, list[int], bytes]:
    name = draw(st.sampled_from(["item_ids", "scores", "extra", ""]))
    dtype = draw(st.sampled_from([*TRITON_DTYPES, "BYTES", "BF16", "NOPE"]))
    shape = draw(
        st.one_of(
            st.just([1, k]),
            st.lists(st.integers(-2, k + 2), min_size=0, max_size=3),
        )
    )
    size = math.prod(shape) if all(d >= 0 for d in shape) else draw(st.integers(0, k))
    values = draw(
        st.lists(
            st.one_of(st.sampled_from(NASTY_NUMBERS), st.integers(0, 250)),
            min_size=size,
            max_size=size,
        )
    )
    raw = draw(
        st.one_of(
            st.just(_tensor(dtype, values, shape) if dtype in TRITON_DTYPES else b""),
            st.binary(max_size=8 * (k + 2)),
        )
    )
    return name, dtype, shape, raw


MUTATIONS = ["none", "none", "none", "nan", "inf", "dup", "seen", "unknown", "pad", "huge", "width"]


@st.composite
def plausible_outputs(draw: st.DrawFn, k: int) -> list[tuple[str, str, list[int], bytes]]:
    """A valid answer (unsorted scores allowed) or one with a single rule broken."""
    ids = draw(st.lists(st.integers(3, 199), min_size=k, max_size=k, unique=True))
    scores = draw(st.lists(st.floats(-1, 1, width=32), min_size=k, max_size=k))
    mutation = draw(st.sampled_from(MUTATIONS))
    at = draw(st.integers(0, k - 1))
    if mutation in ("nan", "inf"):
        scores[at] = math.nan if mutation == "nan" else -math.inf
    elif mutation == "dup" and k > 1:
        ids[at] = ids[(at + 1) % k]
    elif mutation in ("seen", "unknown", "pad", "huge"):
        ids[at] = {"seen": 1, "unknown": 201, "pad": -1, "huge": 2**63 - 1}[mutation]
    width = k + draw(st.sampled_from([-1, 1])) if mutation == "width" else k
    ids_arr = np.array([*ids, -1][:width], dtype=np.int64).reshape(1, -1)
    scores_arr = np.array([*scores, -math.inf][:width], dtype=np.float32).reshape(1, -1)
    event(f"mutation {mutation}")
    return [
        ("item_ids", "INT64", list(ids_arr.shape), ids_arr.tobytes()),
        ("scores", "FP32", list(scores_arr.shape), scores_arr.tobytes()),
    ]


class FakeGrpcClient:
    """Triton's gRPC stub: answers every ``ModelInfer`` with the response it was given."""

    def __init__(self, outputs: list[tuple[str, str, list[int], bytes]]) -> None:
        self.response = service_pb2.ModelInferResponse(model_name="two_tower", model_version="1")
        for name, dtype, shape, raw in outputs:
            out = self.response.outputs.add()
            out.name, out.datatype = name, dtype
            out.shape.extend(shape)
            self.response.raw_output_contents.append(raw)

    async def ModelInfer(self, *args: object, **kwargs: object) -> service_pb2.ModelInferResponse:
        return self.response


def triton_answer(outputs: list[tuple[str, str, list[int], bytes]], k: int) -> TierResult:
    features = UserFeatures(user_id=7, seen_items=tuple(SKIP))

    async def call() -> TierResult:
        primary = TritonPrimary(url="127.0.0.1:1")
        await primary.close()
        primary._stub = FakeGrpcClient(outputs)
        answer = await primary.recommend(features, k=k, exclude=sorted(SKIP), timeout_s=1.0)
        return check_answer(answer, k=k, skip=SKIP, catalogue=POPULAR)

    return asyncio.run(call())


@HYPOTHESIS
@given(data=st.data(), k=st.integers(1, 8))
def test_any_triton_answer_is_valid_or_a_tier_error(data: st.DataObject, k: int) -> None:
    outputs = data.draw(
        st.one_of(
            plausible_outputs(k),
            st.lists(triton_output(k), max_size=4),
        )
    )
    try:
        result = triton_answer(outputs, k)
    except UpstreamError as exc:
        event(f"refused: {getattr(exc, 'rule', type(exc).__name__)}")
        return
    event("served")
    assert_follows_every_rule(result, k=k, skip=SKIP)


def _outputs(ids: list[int], scores: list[float]) -> list[tuple[str, str, list[int], bytes]]:
    ids_arr = np.array([ids], dtype=np.int64)
    scores_arr = np.array([scores], dtype=np.float32)
    return [
        ("item_ids", "INT64", [1, len(ids)], ids_arr.tobytes()),
        ("scores", "FP32", [1, len(scores)], scores_arr.tobytes()),
    ]


@pytest.mark.parametrize(
    ("outputs", "rule"),
    [
        (_outputs([5, 6, 7], [0.3, math.nan, 0.1]), Rule.SCORE),
        (_outputs([5, 6, 7], [math.inf, 0.2, 0.1]), Rule.SCORE),
        (_outputs([5, 6, 7], [0.3, 0.2, -math.inf]), Rule.SCORE),  # -inf only with a -1 pad
        (_outputs([5, 5, 7], [0.3, 0.2, 0.1]), Rule.DUPLICATE),
        (_outputs([5, 1, 7], [0.3, 0.2, 0.1]), Rule.SEEN),
        (_outputs([5, 6, 900], [0.3, 0.2, 0.1]), Rule.UNKNOWN),
        (_outputs([5, -1, 7], [0.3, -math.inf, 0.1]), Rule.ID),  # padding inside the row
        (_outputs([5, 6, -1], [0.3, 0.2, -math.inf]), Rule.COUNT),  # short, catalogue has more
        (_outputs([5, 6], [0.3, 0.2]), Rule.FORMAT),  # width 2 for k=3
        (_outputs([5, 6, 7], [0.3, 0.2, 0.1])[:1], Rule.FORMAT),  # scores missing
        (
            [*_outputs([5, 6, 7], [0.3, 0.2, 0.1]), ("extra", "FP32", [1, 1], b"\0" * 4)],
            Rule.FORMAT,
        ),
        (
            [
                ("item_ids", "FP32", [1, 3], np.array([[5.0, 6.0, 42.5]], np.float32).tobytes()),
                _outputs([5, 6, 7], [0.3, 0.2, 0.1])[1],
            ],
            Rule.FORMAT,
        ),
        (
            [
                ("item_ids", "INT64", [1, 3], np.array([[5, 6, 7]], np.int64).tobytes()[:20]),
                _outputs([5, 6, 7], [0.3, 0.2, 0.1])[1],
            ],
            Rule.FORMAT,
        ),
        (
            [
                ("item_ids", "INT64", [2, 3], np.arange(6, dtype=np.int64).tobytes()),
                ("scores", "FP32", [2, 3], np.zeros(6, np.float32).tobytes()),
            ],
            Rule.FORMAT,
        ),
        (
            [
                ("item_ids", "INT64", [1, 1, 3], np.array([5, 6, 7], np.int64).tobytes()),
                ("scores", "FP32", [1, 1, 3], np.array([3, 2, 1], np.float32).tobytes()),
            ],
            Rule.FORMAT,
        ),
    ],
)
def test_each_broken_triton_rule_is_named(
    outputs: list[tuple[str, str, list[int], bytes]], rule: Rule
) -> None:
    with pytest.raises(InvalidAnswer) as caught:
        triton_answer(outputs, 3)
    assert caught.value.rule is rule


def test_unsorted_finite_answer_is_resorted_and_padding_tail_is_trimmed() -> None:
    result = triton_answer(_outputs([5, 6, 7], [0.1, 0.3, 0.2]), 3)
    assert result.item_ids == [6, 7, 5]
    # The catalogue running out: a -1/-inf tail is padding, not an item.
    few = PopularFew()
    answer = decode_triton(
        {
            "item_ids": ("INT64", [1, 3], np.array([[5, 6, -1]], np.int64)),
            "scores": ("FP32", [1, 3], np.array([[0.3, 0.2, -np.inf]], np.float32)),
        },
        k=3,
        model_version="m",
    )
    assert check_answer(answer, k=3, skip=set(), catalogue=few).item_ids == [5, 6]


class PopularFew:
    """A catalogue of two items (5 and 6)."""

    def known(self, item_ids: list[int]) -> np.ndarray:
        return np.isin(np.asarray(item_ids, dtype=np.int64), [5, 6])

    def available(self, skip: set[int]) -> int | None:
        return len({5, 6} - skip)


def test_from_lists_refuses_what_python_would_coerce() -> None:
    for ids, scores, rule in [
        ([True], [1.0], Rule.ID),
        ([2**63], [1.0], Rule.ID),
        ([1.0], [1.0], Rule.ID),
        ([1], ["1.0"], Rule.SCORE),
        ([1], [None], Rule.SCORE),
        ([1, 2], [1.0], Rule.LENGTH),
    ]:
        with pytest.raises(InvalidAnswer) as caught:
            from_lists(ids, scores, model_version="m")
        assert caught.value.rule is rule


# -- MF service ------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", '"NaN"', "99999999999999999999999"]


MF_MUTATIONS = ["none", "none", "none", "raw_id", "raw_score", "user", "known", "count", "dup"]


@st.composite
def plausible_mf_body(draw: st.DrawFn, k: int) -> bytes:
    """A valid body (unsorted scores allowed) or one with a single thing wrong, including the
    NaN / Infinity tokens a careless server writes."""
    ids = [str(i) for i in draw(st.lists(st.integers(3, 199), min_size=k, max_size=k, unique=True))]
    scores = [repr(x) for x in draw(st.lists(st.floats(-1, 1), min_size=k, max_size=k))]
    user, known = "7", "true"
    mutation = draw(st.sampled_from(MF_MUTATIONS))
    at = draw(st.integers(0, k - 1))
    if mutation == "raw_id":
        ids[at] = draw(st.sampled_from([*RAW_NUMBERS, "-3", "5.5", '"9"', "1"]))
    elif mutation == "raw_score":
        scores[at] = draw(st.sampled_from([*RAW_NUMBERS, "null", "true"]))
    elif mutation == "user":
        user = draw(st.sampled_from(["8", '"7"', "-7", "7.0"]))
    elif mutation == "known":
        known = draw(st.sampled_from(["false", "1", '"yes"']))
    elif mutation == "count":
        ids, scores = ids[:at], scores[:at]
    elif mutation == "dup" and k > 1:
        ids[at] = ids[(at + 1) % k]
    event(f"mf mutation {mutation}")
    items = ", ".join(f'{{"item_id": {i}, "score": {x}}}' for i, x in zip(ids, scores, strict=True))
    return (
        f'{{"user_id": {user}, "items": [{items}], "model_version": "v1", "known_user": {known}}}'
    ).encode()


class MfWire:
    """One MF client on one loop for the whole module; each call answers the given response."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.answer = httpx.Response(200)
        self.mf = self.loop.run_until_complete(self._client())

    async def _client(self) -> MfFallback:
        mf = MfFallback(base_url="http://mf", timeout_s=1.0)
        await mf.client.aclose()
        mf.client = httpx.AsyncClient(
            base_url="http://mf", transport=httpx.MockTransport(lambda _: self.answer)
        )
        return mf

    def call(self, status: int, content_type: str, body: bytes, k: int) -> TierResult:
        self.answer = httpx.Response(status, content=body, headers={"content-type": content_type})
        answer = self.loop.run_until_complete(
            self.mf.recommend(7, k=k, exclude=sorted(SKIP), timeout_s=1.0)
        )
        return check_answer(answer, k=k, skip=SKIP, catalogue=POPULAR)

    def close(self) -> None:
        self.loop.run_until_complete(self.mf.close())
        self.loop.close()


@pytest.fixture(scope="module")
def mf_wire() -> Iterator[MfWire]:
    wire = MfWire()
    yield wire
    wire.close()


@HYPOTHESIS
@given(
    data=st.data(),
    k=st.integers(1, 6),
    status=st.sampled_from([200, 200, 200, 204, 404, 500, 503]),
    content_type=st.sampled_from(["application/json", "application/json", "text/plain", ""]),
)
def test_any_mf_answer_is_valid_or_a_tier_error(
    mf_wire: MfWire, data: st.DataObject, k: int, status: int, content_type: str
) -> None:
    body = data.draw(
        st.one_of(
            plausible_mf_body(k),
            JSON_VALUES.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=64),
        )
    )
    try:
        result = mf_wire.call(status, content_type, body, k)
    except UpstreamError as exc:
        event(f"refused: {getattr(exc, 'rule', type(exc).__name__)}")
        return
    event("served")
    assert_follows_every_rule(result, k=k, skip=SKIP)


def _mf_body(items: str, user: int = 7) -> bytes:
    return (
        f'{{"user_id": {user}, "items": [{items}], "model_version": "v1", "known_user": true}}'
    ).encode()


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (_mf_body('{"item_id": 5, "score": NaN}'), Rule.FORMAT),
        (_mf_body('{"item_id": 5, "score": Infinity}'), Rule.FORMAT),
        (_mf_body('{"item_id": 5, "score": "NaN"}'), Rule.FORMAT),
        (_mf_body('{"item_id": 5, "score": 1e999}'), Rule.FORMAT),
        (_mf_body('{"item_id": 99999999999999999999, "score": 1}'), Rule.FORMAT),
        (_mf_body('{"item_id": 5.5, "score": 1}'), Rule.FORMAT),
        (_mf_body('{"item_id": 5, "score": 1}', user=8), Rule.FORMAT),
        (_mf_body('{"item_id": 5, "score": 1}'), Rule.COUNT),
        (_mf_body('{"item_id": 5, "score": 1}, {"item_id": 5, "score": 0}'), Rule.DUPLICATE),
        (b"<html>oops</html>", Rule.FORMAT),
    ],
)
def test_each_broken_mf_rule_is_named(mf_wire: MfWire, body: bytes, rule: Rule) -> None:
    with pytest.raises(InvalidAnswer) as caught:
        mf_wire.call(200, "application/json", body, 2)
    assert caught.value.rule is rule


@HYPOTHESIS
@given(
    ids=st.lists(st.one_of(st.integers(-5, 2**64), st.floats(), st.booleans()), max_size=4),
    scores=st.lists(st.one_of(st.floats(), st.integers(-5, 5)), max_size=4),
)
def test_the_hot_path_item_check_agrees_with_the_response_model(
    ids: list[object], scores: list[object]
) -> None:
    """``schemas.check_items`` (plain Python, run on every answer) refuses exactly what the
    response model would refuse, for answers whose ids and scores have the types tiers produce."""
    from pydantic import ValidationError

    from gateway.schemas import RecommendationResponse, UnservableItems, check_items

    body = {
        "user_id": 1,
        "items": [{"item_id": i, "score": s} for i, s in zip(ids, scores, strict=False)],
        "served_by": "popular",
        "fallback_reason": None,
        "model_version": "popular/1",
        "request_id": "r",
    }
    typed = all(type(i) is int for i in ids) and all(type(s) is float for s in scores)
    try:
        check_items(ids, scores)  # type: ignore[arg-type]
        ours = True
    except UnservableItems:
        ours = False
    if len(ids) != len(scores) or not typed:
        assert not ours  # tiers give ints and floats; anything else is refused outright
        return
    try:
        RecommendationResponse.model_validate(body)
        model = True
    except ValidationError:
        model = False
    assert ours == model
