"""One request, one trace: the real gateway, MF service and tritonserver export OpenTelemetry spans
over OTLP/HTTP to the test's receiver (tests/otlp_receiver.py), and the spans of one request
share one trace id with correct parent links across the three processes.

The stack's data, features, ALS artifacts and exported Two-Tower come from conftest.py; this test
starts its own traced tritonserver, MF service and gateway on them (the session stack's processes
run without an OTLP endpoint). To get all three services into one request, Triton's answer is
held back by a small TCP proxy (``DelayProxy``): the gateway times out on the primary and falls
back to the ALS service, while Triton still runs the inference and exports its spans, joined to
the gateway's trace through the ``traceparent`` gRPC metadata. The proxy is a fake for what real
processes cannot produce on demand: a slow network answer from a healthy Triton.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cascade.runtime.procs import ManagedProcess, free_port
from tests.integration.conftest import DATASET, GATEWAY_ENV, GatewayStack
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

SPAN_TIMEOUT_S = 20.0  # Triton's own batch exporter flushes on its schedule


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that forwards client bytes at once and delays the server's answer
    by ``delay_s`` (changeable while it runs; order is kept)."""

    def __init__(self, *, target_port: int) -> None:
        self.target_port = target_port
        self.delay_s = 0.0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def downstream_read() -> None:
            while data := await server_r.read(65536):
                queue.put_nowait((self._loop.time() + self.delay_s, data))
            queue.put_nowait(None)

        async def downstream_write() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - self._loop.time()))
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.gather(upstream(), downstream_read(), downstream_write())

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


@dataclass
class TracedStack:
    receiver: OtlpReceiver
    proxy: DelayProxy
    gateway_url: str
    users: list[int]


def _warm(http_url: str) -> None:
    """A few direct inferences: the first TorchScript calls are slow (profiling executor)."""
    import tritonclient.http as tc

    from gateway.tiers.triton import build_inputs
    from gateway.tiers.types import UserFeatures

    client = tc.InferenceServerClient(url=http_url)
    try:
        for uid in range(5):
            client.infer(
                "two_tower", build_inputs(UserFeatures(user_id=uid), k=10, exclude=[], module=tc)
            )
    finally:
        client.close()


@pytest.fixture
def traced(gateway_stack: GatewayStack, tmp_path: Path) -> Iterator[TracedStack]:
    from fallback_mf.artifacts import als_root
    from two_tower.triton_server import TritonProcess, TritonSettings

    gateway_stack.heal()
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(OtlpReceiver())
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        }
        base = gateway_stack.triton_settings
        triton = TritonProcess(
            TritonSettings(
                model_repository=base.model_repository,  # type: ignore[attr-defined]
                http_port=free_port(),
                grpc_port=free_port(),
                metrics_port=free_port(),
                otlp_endpoint=receiver.endpoint,
            ),
            log_path=tmp_path / "triton.log",
        )
        triton.env.update(otel)
        stack.enter_context(triton)
        triton.wait_ready(timeout=120)
        _warm(triton.http_url)
        proxy = stack.enter_context(DelayProxy(target_port=triton.settings.grpc_port))

        mf_port, gateway_port = free_port(), free_port()
        mf_env = dict(
            gateway_stack.env,
            **otel,
            MF_PORT=str(mf_port),
            MF_ARTIFACTS_DIR=str(als_root(gateway_stack.layout.artifacts_dir)),
            MF_RELOAD_INTERVAL_S="0",
            MF_JSON_LOGS="false",
        )
        mf = ManagedProcess(
            "mf", [sys.executable, "-m", "fallback_mf"], log_path=tmp_path / "mf.log", env=mf_env
        )
        stack.enter_context(mf)
        mf.wait_ready(f"http://127.0.0.1:{mf_port}/readyz", timeout=60)

        gw_env = dict(
            gateway_stack.env,
            **GATEWAY_ENV,
            **otel,
            GATEWAY_PORT=str(gateway_port),
            GATEWAY_TRITON_URL=f"127.0.0.1:{proxy.port}",
            GATEWAY_MF_URL=f"http://127.0.0.1:{mf_port}",
            GATEWAY_DATASET=DATASET,
            GATEWAY_ARTIFACTS_DIR=str(gateway_stack.layout.artifacts_dir),
        )
        gateway = ManagedProcess(
            "gateway",
            [sys.executable, "-m", "gateway"],
            log_path=tmp_path / "gateway.log",
            env=gw_env,
        )
        stack.enter_context(gateway)
        url = f"http://127.0.0.1:{gateway_port}"
        gateway.wait_ready(f"{url}/readyz", timeout=90)
        yield TracedStack(receiver, proxy, url, [int(u) for u in gateway_stack.users()[:5]])


def _trace_of(receiver: OtlpReceiver, request_id: str) -> str:
    """The trace id of the gateway span that served ``request_id``."""

    def found(spans: list[ReceivedSpan]) -> bool:
        return any(
            s.name == "gateway.recommend" and s.attributes.get("request.id") == request_id
            for s in spans
        )

    spans = receiver.wait_for(found, timeout=SPAN_TIMEOUT_S)
    (root,) = [
        s
        for s in spans
        if s.name == "gateway.recommend" and s.attributes.get("request.id") == request_id
    ]
    return root.trace_id


def _wait_trace(
    receiver: OtlpReceiver, trace_id: str, names: set[str], services: set[str]
) -> dict[str, ReceivedSpan]:
    """Wait until the trace holds spans with all these names, from all these services (each
    process exports on its own schedule); return them by name (one each)."""

    def complete(spans: list[ReceivedSpan]) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        return names <= {s.name for s in mine} and services <= {s.service_name for s in mine}

    try:
        receiver.wait_for(complete, timeout=SPAN_TIMEOUT_S)
    except TimeoutError as exc:  # name what this trace lacks, not every span received
        have = sorted(f"{s.service_name}:{s.name}" for s in receiver.trace(trace_id))
        raise TimeoutError(f"trace {trace_id} wants {sorted(names)}; has {have}") from exc
    spans = receiver.trace(trace_id)
    by_name: dict[str, ReceivedSpan] = {}
    for span in spans:
        assert span.name not in by_name or span.name not in names, (
            f"two '{span.name}' spans in one request"
        )
        by_name[span.name] = span
    # correct links: one root (the gateway's), every other parent is a span of this trace
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_span_id is None]
    assert [r.name for r in roots] == ["gateway.recommend"], roots
    orphans = [s for s in spans if s.parent_span_id is not None and s.parent_span_id not in ids]
    assert not orphans, orphans
    return by_name


def _mf_span(spans: dict[str, ReceivedSpan]) -> ReceivedSpan:
    (span,) = [s for s in spans.values() if s.service_name == "fallback-mf"]
    return span


def _complete_trace(
    receiver: OtlpReceiver,
    send: Callable[[], dict[str, Any]],
    names: set[str],
    services: set[str],
    attempts: int = 3,
) -> tuple[dict[str, Any], dict[str, ReceivedSpan]]:
    """Send requests until one's trace holds ``names`` from ``services``; its body and spans.

    Twice in a dozen runs on a loaded 2-core machine (2026-11-30, one a full CI run) one
    request's trace still lacked a span after 20 s; which one was not recorded then (the error
    now names it). A request whose trace never completes is retried, up to ``attempts``; a
    trace with wrong links fails at once.
    """
    failure: TimeoutError | None = None
    for _ in range(attempts):
        body = send()
        try:
            return body, _wait_trace(
                receiver, _trace_of(receiver, body["request_id"]), names, services
            )
        except TimeoutError as exc:
            failure = exc
    assert failure is not None
    raise failure


CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
# a client that asks for its own trace, sampled: it gets a link, not the trace (issue 20)
CLIENT_TRACEPARENT = {"traceparent": f"00-{CLIENT_TRACE_ID}-00f067aa0ba902b7-01"}


def test_one_request_is_one_trace_across_gateway_mf_and_triton(traced: TracedStack) -> None:
    receiver = traced.receiver
    user = traced.users[0]
    with httpx.Client(base_url=traced.gateway_url, timeout=5) as http:

        def primary_served() -> dict[str, Any]:
            # the first calls of a fresh gateway may time out on cold clients, as heal() allows
            deadline = time.monotonic() + 30
            while (
                body := http.get(
                    f"/v1/recommendations/{user}", params={"k": 5}, headers=CLIENT_TRACEPARENT
                ).json()
            )["served_by"] != "two_tower" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert body["served_by"] == "two_tower", body
            served: dict[str, Any] = body
            return served

        # healthy: the primary serves; gateway and Triton spans share the trace
        _, spans = _complete_trace(
            receiver,
            primary_served,
            {"gateway.recommend", "tier.two_tower", "InferRequest"},
            {"gateway", "triton"},
        )
        assert spans["InferRequest"].service_name == "triton"
        assert spans["InferRequest"].parent_span_id == spans["tier.two_tower"].span_id
        # The rule since issue 20 (item 10), changed here deliberately: a client's traceparent
        # no longer names the trace. The gateway starts a new root (the one root _wait_trace
        # checks), keeps the client's context as a span link, and Triton and MF join the
        # gateway's trace, not the client's.
        assert spans["gateway.recommend"].trace_id != CLIENT_TRACE_ID

        def als_after_primary_timeout() -> dict[str, Any]:
            # Triton's answer held back past the primary timeout: ALS serves, Triton still
            # computes (a feature read that times out on this loaded machine skips the primary:
            # try again; a few slow calls stay below the breaker's minimum of 10)
            traced.proxy.delay_s = 0.4
            try:
                for _ in range(4):
                    url = f"/v1/recommendations/{traced.users[1]}"
                    body = http.get(url, params={"k": 5}).json()
                    if body["fallback_reason"] != "features_unavailable":
                        break
            finally:
                traced.proxy.delay_s = 0.0
            assert body["served_by"] == "als" and body["fallback_reason"] == "timeout", body
            served: dict[str, Any] = body
            return served

        body, spans = _complete_trace(
            receiver,
            als_after_primary_timeout,
            {
                "gateway.recommend",
                "features.read",
                "tier.two_tower",
                "tier.als",
                "InferRequest",
                "compute",
            },
            {"gateway", "fallback-mf", "triton"},
        )
    services = {s.service_name for s in spans.values()}
    assert services == {"gateway", "fallback-mf", "triton"}, services

    root = spans["gateway.recommend"]
    for child in ("features.read", "tier.two_tower", "tier.als"):
        assert spans[child].parent_span_id == root.span_id, child
        assert spans[child].service_name == "gateway"
    # Triton's spans hang under the gateway's primary call: InferRequest -> <model> -> compute
    infer = spans["InferRequest"]
    assert infer.service_name == "triton"
    assert infer.parent_span_id == spans["tier.two_tower"].span_id
    model_span = spans["two_tower"]
    assert model_span.parent_span_id == infer.span_id
    assert spans["compute"].parent_span_id == model_span.span_id
    # the ALS service's server span hangs under the gateway's ALS call
    assert _mf_span(spans).parent_span_id == spans["tier.als"].span_id

    # the attributes SREs search by (docs/runbook.md)
    attrs = root.attributes
    assert attrs["tier"] == "als" and attrs["fallback.reason"] == "timeout"
    assert attrs["k"] == 5 and attrs["request.id"] == body["request_id"]
    assert attrs["breaker.state"] == "closed" and attrs["model.version"] == body["model_version"]
    assert attrs["feature.outcome"] == "ok"
    assert spans["tier.two_tower"].attributes.get("tier.outcome") == "timeout"
    assert receiver.errors == []
    assert {s.encoding for s in spans.values() if s.service_name == "triton"} == {"json"}
