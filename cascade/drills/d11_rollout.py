"""Drill D11 "bad candidate": safe rollout against a real tritonserver serving five versions.

``python -m cascade.drills.d11_rollout [--rate 100] [--variants garbage,slow,random,good]``

Setup: the synthetic ``tiny`` data set; each user's newest 30% of interactions are held out as
the *ground truth of the click model*; a Two-Tower is trained on the rest and exported five
times into a drill repository (explicit version policy ``specific { versions: [1..5] }``):

- v1 stable, v2 the **good** candidate (the same model);
- v3 **garbage**: its ``item_ids.npy`` shifted by 10^9, every answer holds unknown ids (and seen
  ones): the gateway's validation makes each one an invalid answer;
- v4 **slow**: its ``model.py`` sleeps 150 ms per batch before the real model runs;
- v5 **random**: its item embeddings permuted: valid answers, random recommendations.

Processes: tritonserver (the real binary), the gateway app in its own process
(``cascade.drills.d11_gateway``: real Triton client, in-memory features), Redis at
``--redis-url`` for the rollout state. The load generator sends GETs at ``--rate`` per second
(open loop) for users with held-out items and simulates clicks: each shown item is clicked with
probability 0.25 if it is in the user's held-out set, 0.01 otherwise; impressions and clicks per
answered ``model_version`` go to the rollout's feedback counters, which the controller reads.

Each bad variant runs ``start`` (no shadow, canary 10% then 50%, 20 s steps) and waits for the
controller's decision; the good one runs with a shadow phase first and must be promoted. The
report: decision and reason, seconds to it, non-2xx, **exposure** (requests answered by the bad
version / all requests from start to rollback) and **routed** (primary calls to it / all
requests), p99 of the served path without shadow (before any rollout) and during the shadow
phase (reported, never asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

from cascade.rollout_cli import start_rollout
from cascade.runtime.procs import free_port
from gateway.rollout.feedback import feedback_key
from gateway.rollout.state import Phase, set_stable
from gateway.rollout.store import RolloutStore, connect

logger = logging.getLogger(__name__)

K = 10
STABLE = 1
VARIANTS = {"garbage": 3, "slow": 4, "random": 5, "good": 2}
P_LIKED, P_OTHER = 0.25, 0.01
SLOW_MODEL = '''"""Drill D11: the real model, 150 ms slower per batch."""
import importlib.util
import os
import time

_spec = importlib.util.spec_from_file_location(
    "d11_base_model", os.path.join(os.path.dirname(__file__), "base_model.py")
)
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


class TritonPythonModel(_base.TritonPythonModel):
    def execute(self, requests):
        time.sleep(0.150)
        return super().execute(requests)
'''


@dataclass
class Sample:
    t: float
    status: int
    version: str
    latency: float


@dataclass
class VariantResult:
    variant: str
    candidate: int
    decision: str
    reason: str
    seconds: float
    requests: int
    non_2xx: int
    served_by_candidate: int
    routed_to_candidate: int
    exposure: float
    routed: float
    p99_ms: float
    statuses: dict[str, int] = field(default_factory=dict)  # non-200 answers by status (0: none)
    notes: list[str] = field(default_factory=list)


# -- setup ---------------------------------------------------------------------------------------


def build(work: Path) -> tuple[Path, Path, dict[int, set[int]]]:
    """Train, export five versions, write the features file; (repository, features, truth)."""
    from cascade.data.features import user_state
    from cascade.data.synthetic import generate
    from cascade.runtime.schema import ITEM_ID, TIMESTAMP, USER_ID
    from two_tower import contract
    from two_tower.export import TEMPLATE_NAME, export_to_triton, model_dir
    from two_tower.pipeline import train_in_memory
    from two_tower.train import TrainParams
    from two_tower.triton_config import write_configs
    from two_tower.triton_server import DEFAULT_MODEL_REPOSITORY

    data = generate(scale="tiny", seed=11)
    df = data.interactions.sort_values([USER_ID, TIMESTAMP])
    rank = df.groupby(USER_ID).cumcount(ascending=False)
    size = df.groupby(USER_ID)[ITEM_ID].transform("size")
    held = rank < (size * 0.3).round()
    train, test = df[~held], df[held]
    truth = {int(u): set(map(int, g)) for u, g in test.groupby(USER_ID)[ITEM_ID]}
    params = TrainParams(dim=32, hidden=64, side_dim=4, seen_pool=50, epochs=8, batch_size=128,
                         lr=0.01, members=1, progress=False, threads=1, device="cpu")  # fmt: skip
    trained = train_in_memory(train.reset_index(drop=True), params=params)
    repo = work / "triton_models"
    folder = model_dir(repo)
    folder.mkdir(parents=True)
    shutil.copy(model_dir(DEFAULT_MODEL_REPOSITORY) / TEMPLATE_NAME, folder / TEMPLATE_NAME)
    for _ in range(5):
        export_to_triton(trained, repository=repo, keep=10)
    ids = np.load(folder / "3" / "item_ids.npy")
    np.save(folder / "3" / "item_ids.npy", ids + 10**9, allow_pickle=False)
    (folder / "4" / "model.py").rename(folder / "4" / "base_model.py")
    (folder / "4" / "model.py").write_text(SLOW_MODEL)
    emb = np.load(folder / "5" / "item_embeddings.npy")
    perm = np.random.default_rng(5).permutation(len(emb))
    np.save(
        folder / "5" / "item_embeddings.npy", np.ascontiguousarray(emb[perm]), allow_pickle=False
    )
    write_configs(folder, versions=[1, 2, 3, 4, 5])
    state = user_state(train)
    pad = contract.pad_items
    counts = train[ITEM_ID].value_counts()
    items = np.asarray(trained.item_ids, dtype=np.int64)
    features = work / "features.npz"
    np.savez(
        features,
        user_id=state[USER_ID].to_numpy(np.int64),
        interaction_count=state["interaction_count"].to_numpy(np.int64),
        recent_items=np.array(
            [pad(list(r), contract.RECENT_ITEMS_LEN) for r in state["recent_items"]], np.int64
        ),
        seen_items=np.array(
            [pad(list(r), contract.MAX_SEEN_ITEMS) for r in state["seen_items"]], np.int64
        ),
        items=items,
        counts=np.array([int(counts.get(i, 0)) for i in items], np.int64),
    )
    return repo, features, truth


# -- load and clicks -----------------------------------------------------------------------------


class Load:
    """Open-loop GETs at ``rate``/s; clicks from the held-out truth into the feedback counters."""

    def __init__(self, base: str, users: list[int], truth: dict[int, set[int]], rate: float,
                 store: RolloutStore) -> None:  # fmt: skip
        self.base, self.users, self.truth, self.rate, self.store = base, users, truth, rate, store
        self.samples: list[Sample] = []
        self.feedback: dict[str, Counter[str]] = defaultdict(Counter)
        self.rng = random.Random(3)
        self._stop = asyncio.Event()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=self.base, timeout=5.0, limits=limits) as client:
            flusher = asyncio.create_task(self._flush_loop())
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            n = 0
            while not self._stop.is_set():
                n += 1
                delay = start + n / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(tasks) < 256:
                    task = asyncio.create_task(self._one(client, self.rng.choice(self.users)))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks, return_exceptions=True)
            flusher.cancel()
            await self._flush()

    def stop(self) -> None:
        self._stop.set()

    async def _one(self, client: httpx.AsyncClient, user: int) -> None:
        started = time.monotonic()
        try:
            r = await client.get(f"/v1/recommendations/{user}", params={"k": K})
        except httpx.HTTPError:
            self.samples.append(Sample(time.time(), 0, "", time.monotonic() - started))
            return
        latency = time.monotonic() - started
        version = r.json().get("model_version", "") if r.status_code == 200 else ""
        self.samples.append(Sample(time.time(), r.status_code, version, latency))
        if r.status_code == 200:
            liked = self.truth.get(user, set())
            items = [i["item_id"] for i in r.json()["items"]]
            counts = self.feedback[version]
            counts["impressions"] += len(items)
            counts["clicks"] += sum(
                self.rng.random() < (P_LIKED if i in liked else P_OTHER) for i in items
            )

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            await self._flush()

    async def _flush(self) -> None:
        pending, self.feedback = self.feedback, defaultdict(Counter)
        key = feedback_key(self.store.prefix)
        async with self.store.client.pipeline(transaction=False) as pipe:
            for version, counts in pending.items():
                for name, n in counts.items():
                    pipe.hincrby(key, f"{version}:{name}", n)
            await pipe.execute()


# -- one variant ---------------------------------------------------------------------------------


def p99_ms(samples: list[Sample]) -> float:
    ok = [s.latency for s in samples if s.status == 200]
    return float(np.percentile(ok, 99) * 1000) if ok else float("nan")


async def candidate_calls(base: str, version: int) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
        text = (await client.get("/metrics")).text
    prefix = 'gateway_rollout_calls_total{arm="candidate",outcome="'
    suffix = f'",version="{version}"}} '
    total = 0.0
    for line in text.splitlines():
        if line.startswith(prefix) and suffix in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def run_variant(name: str, load: Load, store: RolloutStore, base: str, repo: Path,
                      timeout_s: float) -> VariantResult:  # fmt: skip
    version = VARIANTS[name]
    good = name == "good"
    calls_before = await candidate_calls(base, version)
    t0 = time.time()
    state, _, note = await start_rollout(
        store=store, candidate=version, stable=None, repository=repo, artifacts_dir=None,
        shadow_s=15.0 if good else 0.0, steps=(10.0, 50.0), step_s=20.0, shadow_share=1.0,
        max_offline_drop=0.02, force=True, rollout_id=f"d11-{name}-{uuid.uuid4().hex[:6]}",
    )  # fmt: skip
    notes = [note] if note else []
    shadow_end: float | None = None
    while time.time() - t0 < timeout_s:
        await asyncio.sleep(0.25)
        state = await store.load()
        if good and shadow_end is None and state.phase is not Phase.SHADOW:
            shadow_end = time.time()
        if state.phase in (Phase.PROMOTED, Phase.ROLLED_BACK):
            break
    t1 = time.time()
    await asyncio.sleep(1.5)  # the replica's counters and in-flight answers settle
    window = [s for s in load.samples if t0 <= s.t <= t1]
    label = f"two_tower/{version}"
    served = sum(s.version == label for s in window)
    routed = await candidate_calls(base, version) - calls_before
    if good and shadow_end is not None:
        in_shadow = [s for s in window if s.t <= shadow_end]
        notes.append(f"p99 during shadow {p99_ms(in_shadow):.1f} ms over {len(in_shadow)} requests")
    n = max(len(window), 1)
    return VariantResult(
        variant=name, candidate=version, decision=state.phase.value if not state.active else f"timeout in {state.label()}",
        reason=state.reason, seconds=round(t1 - t0, 1), requests=len(window),
        non_2xx=sum(s.status != 200 for s in window), served_by_candidate=served,
        routed_to_candidate=routed, exposure=served / n, routed=routed / n,
        p99_ms=round(p99_ms(window), 1), notes=notes,
        statuses={str(k): v for k, v in Counter(x.status for x in window if x.status != 200).items()},
    )  # fmt: skip


# -- the whole drill -----------------------------------------------------------------------------


async def drill(
    *, work: Path, variants: list[str], rate: float, redis_url: str
) -> dict[str, object]:
    from two_tower.triton_server import TritonProcess, TritonSettings

    t_build = time.time()
    repo, features, truth = await asyncio.to_thread(build, work)
    logger.info("built in %.0f s", time.time() - t_build)
    triton = TritonProcess(
        TritonSettings(model_repository=repo, backends_dir=work / "backends", http_port=0,
                       grpc_port=0, metrics_port=0, otlp_endpoint=None),
        log_path=work / "tritonserver.log",
    )  # fmt: skip
    prefix = f"cascade:d11:{uuid.uuid4().hex[:8]}"
    store = RolloutStore(connect(redis_url, timeout_s=2.0), prefix=prefix)
    gateway: subprocess.Popen[bytes] | None = None
    try:
        triton.start()
        await asyncio.to_thread(triton.wait_ready, timeout=300)
        await store.apply(lambda st: set_stable(st, STABLE, now=time.time(), by="d11"))
        port = free_port()
        env = {
            **os.environ,
            "GATEWAY_ROLLOUT_REDIS_URL": redis_url, "GATEWAY_ROLLOUT_PREFIX": prefix,
            "GATEWAY_ROLLOUT_REFRESH_S": "0.5", "GATEWAY_ROLLOUT_INTERVAL_S": "2",
            "GATEWAY_ROLLOUT_MIN_REQUESTS": "100", "GATEWAY_ROLLOUT_MIN_LATENCY_REQUESTS": "100",
            "GATEWAY_ROLLOUT_MIN_IMPRESSIONS": "1000", "OPENBLAS_NUM_THREADS": "1",
        }  # fmt: skip
        log = (work / "gateway.log").open("wb")
        gateway = subprocess.Popen(
            [sys.executable, "-m", "cascade.drills.d11_gateway", "--features", str(features),
             "--triton", triton.grpc_url, "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=1.0) as client:
            for _ in range(120):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
            else:
                raise RuntimeError(f"drill gateway not ready; see {work / 'gateway.log'}")
        users = sorted(set(truth) & set(int(u) for u in np.load(features)["user_id"]))
        load = Load(base, users, truth, rate, store)
        runner = asyncio.create_task(load.run())
        await asyncio.sleep(10)  # warm-up (Triton's first calls, the breaker's window)
        t_base = time.time()
        await asyncio.sleep(15)  # the no-rollout, no-shadow baseline
        baseline = [s for s in load.samples if s.t >= t_base]
        results = []
        for name in sorted(variants, key=lambda v: v == "good"):  # the good one last: it promotes
            logger.info("D11 variant %s", name)
            results.append(
                await run_variant(name, load, store, base, repo, 60.0 if name != "good" else 240.0)
            )
        load.stop()
        await runner
        ctr = {}
        raw = await store.client.hgetall(feedback_key(prefix))  # type: ignore[misc]
        for k, v in raw.items():
            ctr[k.decode()] = int(v)
        return {
            "rate": rate,
            "baseline_requests": len(baseline),
            "baseline_p99_ms": round(p99_ms(baseline), 1),
            "baseline_non_2xx": sum(s.status != 200 for s in baseline),
            "total_requests": len(load.samples),
            "total_non_2xx": sum(s.status != 200 for s in load.samples),
            "variants": [asdict(r) for r in results],
            "feedback": ctr,
            "history": await store.history(50),
        }
    finally:
        if gateway is not None:
            gateway.terminate()
            try:
                gateway.wait(timeout=15)
            except subprocess.TimeoutExpired:
                gateway.kill()
        triton.stop()
        keys = [k async for k in store.client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await store.client.delete(*keys)
        await store.close()


def expected(result: dict[str, object]) -> list[str]:
    """What D11 requires; the failures, in words (empty: passed)."""
    problems = []
    for v in result["variants"]:  # type: ignore[attr-defined]
        want = "promoted" if v["variant"] == "good" else "rolled_back"
        if v["decision"] != want:
            problems.append(f"{v['variant']}: {v['decision']}, expected {want}")
        if v["non_2xx"]:
            problems.append(f"{v['variant']}: {v['non_2xx']} non-2xx answers")
    return problems


def format_report(result: dict[str, object]) -> str:
    lines = [
        f"D11 bad candidate: {result['rate']} req/s; baseline (no rollout) p99 {result['baseline_p99_ms']} ms "
        f"over {result['baseline_requests']} requests; {result['total_requests']} requests, "
        f"{result['total_non_2xx']} non-2xx in all",
        "",
        "| variant | version | decision | seconds | requests | non-2xx | served by it | exposure | routed to it | routed share | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in result["variants"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {v['variant']} | {v['candidate']} | {v['decision']} | {v['seconds']} | {v['requests']} | "
            f"{v['non_2xx']} | {v['served_by_candidate']} | {v['exposure']:.2%} | {v['routed_to_candidate']} | "
            f"{v['routed']:.2%} | {v['p99_ms']} |"
        )
    lines.append("")
    for v in result["variants"]:  # type: ignore[attr-defined]
        bad = f"; non-200 by status {v['statuses']}" if v["statuses"] else ""
        lines.append(
            f"- {v['variant']}: {v['reason']}{bad}" + "".join(f"; {n}" for n in v["notes"])
        )
    problems = expected(result)
    lines += ["", "PASSED" if not problems else "FAILED: " + "; ".join(problems)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Drill D11: bad model candidates are rolled back.")
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--variants", default="garbage,slow,random,good")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("GATEWAY_ROLLOUT_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or args.rate <= 0:
        print(f"error: variants are {', '.join(VARIANTS)}; rate > 0", file=sys.stderr)
        raise SystemExit(2)
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="d11-"))
    result = asyncio.run(drill(work=work, variants=names, rate=args.rate, redis_url=args.redis_url))
    report = format_report(result)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "d11.md").write_text(report + "\n")
        (args.out / "d11.json").write_text(json.dumps(result, indent=2, default=str))
    raise SystemExit(1 if expected(result) else 0)


if __name__ == "__main__":
    main()
