"""``cascade rollout start|status|promote|abort``: drive a model rollout (thin Typer shells).

The state lives in Redis (``GATEWAY_ROLLOUT_REDIS_URL``, the one the gateways read); the
gateways' controller advances or rolls back by itself, these commands start a rollout, show it,
and let an operator end it by hand. ``start`` first runs the offline gate
(``cascade.rollout_gate``) and refuses a candidate whose offline Recall@20 is lower than stable's
by more than ``--max-offline-drop`` unless ``--force``. Exit codes: 0 done, 2 refused (the gate,
an illegal transition, bad input), 1 Redis unavailable. Never a traceback; URLs are printed
without their password. See docs/rollout.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from cascade.rollout_gate import GateError, GateResult, offline_gate
from cascade.runtime.paths import Layout
from cascade.runtime.redact import redact, redact_url
from gateway.rollout import state as sm
from gateway.rollout.state import IllegalTransition, Plan, RolloutState, Transition, describe_move
from gateway.rollout.store import DEFAULT_PREFIX, RolloutStore, StoreUnavailable, connect
from two_tower import contract

T = TypeVar("T")
URL_ENV = "GATEWAY_ROLLOUT_REDIS_URL"
DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_REPOSITORY = Path(__file__).resolve().parents[1] / "triton_models"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

app = typer.Typer(
    help="Safe model rollout: shadow, sticky canary steps, automatic analysis and rollback.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


class Refused(Exception):
    """The command was refused (exit 2); the message says why."""


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``5m``, ``1h``, ``500ms`` -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise Refused(f"not a duration: {text!r} (use 30s, 5m, 1h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_steps(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise Refused(f"--steps takes percentages like 1,5,25,50, got {text!r}") from exc


def served_versions(repository: Path) -> list[int]:
    folder = repository / contract.MODEL_NAME
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


async def start_rollout(
    *,
    store: RolloutStore,
    candidate: int,
    stable: int | None,
    repository: Path,
    artifacts_dir: Path | None,
    shadow_s: float,
    steps: tuple[float, ...],
    step_s: float,
    shadow_share: float,
    max_offline_drop: float,
    force: bool,
    rollout_id: str | None = None,
    now: Callable[[], float] = time.time,
) -> tuple[RolloutState, GateResult | None, str]:
    """Gate the candidate, then move the shared state to shadow (or the first step).

    Returns the new state, the gate's result (None when it could not judge and ``force``), and
    a note for the operator. Raises Refused, StoreUnavailable."""
    current = await store.load()
    if current.active:
        raise Refused(
            f"rollout {current.rollout_id} is {current.label()}: abort or promote it first"
        )
    versions = served_versions(repository)
    if candidate not in versions:
        raise Refused(
            f"candidate version {candidate} is not in {repository / contract.MODEL_NAME} (has {versions})"
        )
    if stable is None:
        stable = current.stable_version
    if stable is None:
        older = [v for v in versions if v < candidate]
        if not older:
            raise Refused("no stable version: pass --stable V (no rollout has run yet)")
        stable = older[-1]
    # The plan's own checks (steps, durations, shares) before the gate: a bad option is
    # reported as such, not after a gate refusal it had nothing to do with.
    try:
        plan = Plan(
            rollout_id=rollout_id or f"v{candidate}-{int(now())}",
            stable=stable,
            candidate=candidate,
            shadow_s=shadow_s,
            steps=steps,
            step_s=step_s,
            shadow_share=shadow_share,
        )
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    note = ""
    gate: GateResult | None = None
    try:
        gate = offline_gate(
            repository=repository,
            stable=stable,
            candidate=candidate,
            max_drop=max_offline_drop,
            artifacts_dir=artifacts_dir,
        )
    except GateError as exc:
        if not force:
            raise Refused(f"offline gate cannot judge: {exc} (--force to start anyway)") from exc
        note = f"offline gate skipped (--force): {exc}"
    if gate is not None and not gate.passed:
        if not force:
            raise Refused(f"{gate.message} (--force to start anyway)")
        note = f"{gate.message}; started anyway (--force)"
    elif gate is not None:
        note = gate.message
    new, _ = await _apply(store, lambda s: sm.start(s, plan, now=now(), by="cli"))
    return new, gate, note


async def _apply(
    store: RolloutStore, move: Callable[[RolloutState], tuple[RolloutState, Transition]]
) -> tuple[RolloutState, Transition]:
    try:
        return await store.apply(move)
    except IllegalTransition as exc:
        raise Refused(str(exc)) from exc


async def set_stable_version(
    *, store: RolloutStore, version: int, repository: Path, now: float | None = None
) -> RolloutState:
    """Name the version every user gets outside a rollout (it must be in the repository)."""
    versions = served_versions(repository)
    if version not in versions:
        raise Refused(
            f"version {version} is not in {repository / contract.MODEL_NAME} (has {versions})"
        )
    at = time.time() if now is None else now
    new, _ = await _apply(store, lambda s: sm.set_stable(s, version, now=at, by="cli"))
    return new


async def promote_rollout(
    *, store: RolloutStore, reason: str, now: float | None = None
) -> RolloutState:
    """End the rollout by hand: the candidate serves everyone."""
    at = time.time() if now is None else now
    new, _ = await _apply(store, lambda s: sm.promote(s, now=at, reason=reason, by="cli"))
    return new


async def abort_rollout(
    *, store: RolloutStore, reason: str, now: float | None = None
) -> RolloutState:
    """End the rollout by hand: traffic returns to the stable version at once."""
    at = time.time() if now is None else now
    new, _ = await _apply(store, lambda s: sm.roll_back(s, now=at, reason=reason, by="cli"))
    return new


async def rollout_status(*, store: RolloutStore, history: int = 10) -> dict[str, Any]:
    """State, the controller's last verdict and the recent transitions, as one JSON object."""
    state = await store.load()
    return {
        "state": state.to_json(),
        "label": state.label(),
        "candidate_percent": state.candidate_percent,
        "verdict": await store.load_verdict(),
        "history": await store.history(history),
    }


def format_status(status: dict[str, Any], *, now: float | None = None) -> str:
    state = RolloutState.from_json(status["state"])
    now = time.time() if now is None else now
    lines = [f"phase: {state.label()}"]
    if state.stable_version is not None:
        lines.append(f"stable version: {state.stable_version}")
    if state.plan is not None:
        p = state.plan
        lines += [
            f"rollout: {p.rollout_id}  candidate: {p.candidate}  steps: {','.join(f'{s:g}' for s in p.steps)}%"
            f"  step: {p.step_s:g}s  shadow: {p.shadow_s:g}s",
            f"since: {now - state.since:.0f}s ago  reason: {state.reason}",
        ]
    verdict = status.get("verdict")
    if verdict and state.active:
        lines.append(f"last analysis: {verdict.get('decision')}: {verdict.get('reason')}")
        for check in verdict.get("checks", []):
            lines.append(
                f"  {check['metric']:<12} {check['status']:<12} candidate {check['candidate']:.4g}"
                f"  stable {check['stable']:.4g}  z {check['z']:+.1f}  ({check['detail']})"
            )
    if status.get("history"):
        lines.append("history:")
        for h in status["history"]:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h["at"]))
            lines.append(f"  {at} {describe_move(h)}")
    return "\n".join(lines)


# -- the Typer shells ------------------------------------------------------------------------


def _run(url: str, prefix: str, body: Callable[[RolloutStore], Awaitable[T]]) -> T:
    if not url:  # no flag, no env: the running `cascade up`'s Redis, else the default
        from cascade.stack_status import stack_redis_url

        url = stack_redis_url(Layout.from_env()) or DEFAULT_URL

    async def main() -> T:
        store = RolloutStore(connect(url, timeout_s=2.0), prefix=prefix)
        try:
            return await body(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except Refused as exc:
        typer.echo(f"error: {redact(str(exc))}", err=True)
        raise typer.Exit(code=2) from None
    except StoreUnavailable as exc:
        typer.echo(f"error: {exc} (rollout state at {redact_url(url)})", err=True)
        raise typer.Exit(code=1) from None


UrlOpt = typer.Option(
    "",
    "--redis-url",
    # The gateway's variable, else the online store's: `cascade up` gives its gateway REDIS_URL.
    envvar=[URL_ENV, "REDIS_URL"],
    help="Redis holding the rollout state (env GATEWAY_ROLLOUT_REDIS_URL, else REDIS_URL, else "
    f"the running `cascade up`'s, else {DEFAULT_URL}).",
)
PrefixOpt = typer.Option(
    DEFAULT_PREFIX, "--prefix", envvar="GATEWAY_ROLLOUT_PREFIX", help="Key prefix."
)


@app.command("start")
def start_command(
    candidate: int = typer.Option(..., "--candidate", help="Triton version to roll out."),
    stable: int | None = typer.Option(
        None, "--stable", help="Stable version (default: the serving one)."
    ),
    shadow: str = typer.Option("5m", "--shadow", help="Shadow phase length (0 skips it)."),
    steps: str = typer.Option("1,5,25,50", "--steps", help="Canary percentages."),
    step_duration: str = typer.Option("5m", "--step-duration", help="Length of each canary step."),
    shadow_share: float = typer.Option(0.1, "--shadow-share", help="Share of requests shadowed."),
    max_offline_drop: float = typer.Option(
        0.02, "--max-offline-drop", help="Largest relative Recall@20 drop the offline gate allows."
    ),
    force: bool = typer.Option(False, "--force", help="Start even if the offline gate refuses."),
    rollout_id: str | None = typer.Option(
        None, "--id", help="Rollout id (default v<candidate>-<time>)."
    ),
    repository: Annotated[
        Path, typer.Option("--model-repository", help="Triton model repository.")
    ] = DEFAULT_REPOSITORY,
    redis_url: str = UrlOpt,
    prefix: str = PrefixOpt,
) -> None:
    """Start rolling out --candidate: offline gate, then shadow, then the canary steps."""
    try:
        shadow_s, step_s, pcts = (
            parse_duration(shadow),
            parse_duration(step_duration),
            parse_steps(steps),
        )
    except Refused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    new, _, note = _run(
        redis_url,
        prefix,
        lambda store: start_rollout(
            store=store,
            candidate=candidate,
            stable=stable,
            repository=repository,
            artifacts_dir=Layout.from_env().artifacts_dir,
            shadow_s=shadow_s,
            steps=pcts,
            step_s=step_s,
            shadow_share=shadow_share,
            max_offline_drop=max_offline_drop,
            force=force,
            rollout_id=rollout_id,
        ),
    )
    if note:
        typer.echo(note)
    assert new.plan is not None
    typer.echo(
        f"rollout {new.plan.rollout_id}: v{new.plan.stable} -> v{new.plan.candidate}, now {new.label()}"
    )


@app.command("init")
def init_command(
    stable: int = typer.Option(..., "--stable", help="The version every user gets."),
    repository: Annotated[
        Path, typer.Option("--model-repository", help="Triton model repository.")
    ] = DEFAULT_REPOSITORY,
    redis_url: str = UrlOpt,
    prefix: str = PrefixOpt,
) -> None:
    """Name the stable version (before the first rollout, Triton's newest serves everyone)."""
    new = _run(
        redis_url,
        prefix,
        lambda store: set_stable_version(store=store, version=stable, repository=repository),
    )
    typer.echo(f"stable version: {new.stable_version} (every user, outside rollouts)")


@app.command("status")
def status_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    history: int = typer.Option(10, "--history", min=0, max=1000, help="Transitions shown."),
    redis_url: str = UrlOpt,
    prefix: str = PrefixOpt,
) -> None:
    """The rollout's phase, the last analysis and the recent transitions."""
    status = _run(redis_url, prefix, lambda store: rollout_status(store=store, history=history))
    typer.echo(json.dumps(status, indent=2) if as_json else format_status(status))


@app.command("promote")
def promote_command(
    reason: str = typer.Option("promoted by hand", "--reason"),
    redis_url: str = UrlOpt,
    prefix: str = PrefixOpt,
) -> None:
    """Promote the candidate now (every user gets it)."""
    new = _run(redis_url, prefix, lambda store: promote_rollout(store=store, reason=reason))
    typer.echo(f"promoted: version {new.stable_version} is stable")


@app.command("abort")
def abort_command(
    reason: str = typer.Option("aborted by hand", "--reason"),
    redis_url: str = UrlOpt,
    prefix: str = PrefixOpt,
) -> None:
    """Roll back now: traffic returns to the stable version within a second."""
    new = _run(redis_url, prefix, lambda store: abort_rollout(store=store, reason=reason))
    typer.echo(f"rolled back: version {new.stable_version} serves everyone")
