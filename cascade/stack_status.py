"""``cascade status`` and ``cascade down``: the stack ``cascade up`` runs, seen from outside.

Both read ``$CASCADE_HOME/run/stack.json``, which ``cascade up`` rewrites every half second: its
own pid and data set under ``cascade_up``, and per child the pid, readiness URL, restarts and
log file. ``status`` asks each child's readiness URL (2 s timeout) and prints what it serves;
``down`` sends SIGTERM to ``cascade up`` (which stops its children in order, as Ctrl-C does) and
waits. A pid is trusted only while that process still runs the command recorded for it, so a
stale file never makes ``down`` signal an unrelated process that reused the pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import typer

from cascade.runtime.paths import Layout

SUPERVISOR = "cascade_up"
HTTP_TIMEOUT_S = 2.0


def state_path(layout: Layout) -> Path:
    return layout.run_dir / "stack.json"


def read_state(layout: Layout) -> dict[str, Any] | None:
    """The state file's contents, or None when there is none (or it is unreadable)."""
    try:
        state = json.loads(state_path(layout).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def running(entry: dict[str, Any]) -> bool:
    """The entry's pid runs and is still the process recorded (its start time matches)."""
    try:
        proc = psutil.Process(int(entry["pid"]))
        started = entry.get("create_time")
        if started is not None and abs(proc.create_time() - float(started)) > 1.0:
            return False  # the pid was reused by another process
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


@dataclass
class ChildStatus:
    name: str
    pid: int | None
    alive: bool
    ready: bool
    detail: str
    log: str
    restarts: int


def _probe(url: str) -> tuple[bool, str]:
    """(ready, what the readiness answer says) for one child."""
    try:
        r = httpx.get(url, timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return False, f"no answer ({type(exc).__name__})"
    detail = ""
    try:
        body = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if "model_version" in body:  # the MF service
            detail = f"model {body['model_version']}"
        checks = body.get("checks")
        if isinstance(checks, dict):  # the gateway: breaker, upstreams, popular list
            detail = ", ".join(f"{k}={v}" for k, v in sorted(checks.items()))
    return r.status_code == 200, detail


def _triton_versions(ready_url: str) -> str:
    """The Two-Tower versions Triton serves (its model metadata lists them)."""
    url = ready_url.removesuffix("/ready")
    try:
        versions = httpx.get(url, timeout=HTTP_TIMEOUT_S).json().get("versions") or []
    except (httpx.HTTPError, ValueError, AttributeError):
        return ""
    return f"two_tower versions {', '.join(map(str, versions))}" if versions else ""


def children(state: dict[str, Any]) -> list[ChildStatus]:
    out = []
    for name, entry in state.items():
        if name == SUPERVISOR or not isinstance(entry, dict):
            continue
        alive = running(entry)
        ready, detail = _probe(entry.get("ready_url", "")) if alive else (False, "not running")
        if alive and name == "tritonserver":
            detail = _triton_versions(entry.get("ready_url", "")) or detail
        out.append(
            ChildStatus(
                name=name,
                pid=entry.get("pid"),
                alive=alive,
                ready=ready,
                detail=detail,
                log=str(entry.get("log", "")),
                restarts=int(entry.get("restarts", 0)),
            )
        )
    return out


def status_text(layout: Layout) -> tuple[str, int]:
    """What ``cascade status`` prints, and its exit code (0 up and ready, 1 not running, 2 degraded)."""
    state = read_state(layout)
    if state is None:
        return f"no stack: {state_path(layout)} does not exist (start one with `cascade up`)", 1
    up = state.get(SUPERVISOR) or {}
    if not running(up):
        entries = [e for n, e in state.items() if n != SUPERVISOR and isinstance(e, dict)]
        logs = sorted({str(Path(e["log"]).parent) for e in entries if e.get("log")})
        where = f"; its logs: {', '.join(logs)}" if logs else ""
        if up.get("stopped_at"):
            return (
                f"no stack running: the last `cascade up` (pid {up.get('pid', '?')}, data set "
                f"{up.get('dataset', '?')!r}) stopped cleanly at {up['stopped_at']}{where}",
                1,
            )
        return (
            f"no stack running: {state_path(layout)} is left from an earlier `cascade up` "
            f"(pid {up.get('pid', '?')} is gone without a clean stop){where}",
            1,
        )
    lines = [
        f"cascade up (pid {up['pid']}) serves data set {up.get('dataset', '?')!r}, "
        f"gateway {up.get('gateway_url', '?')}"
    ]
    kids = children(state)
    width = max((len(c.name) for c in kids), default=0)
    for c in kids:
        mark = "ready" if c.ready else ("not ready" if c.alive else "down")
        restarts = f", {c.restarts} restarts" if c.restarts else ""
        lines.append(f"  {c.name:<{width}}  pid {c.pid}  {mark}{restarts}  {c.detail}".rstrip())
        lines.append(f"  {'':<{width}}  log {c.log}")
    return "\n".join(lines), 0 if all(c.ready for c in kids) else 2


def stack_redis_url(layout: Layout) -> str | None:
    """The Redis the running ``cascade up`` uses (its online store), or None: what the CLI's
    other commands default to when neither a flag nor REDIS_URL names one, so a second
    terminal reads the stack it sees (a stack started with REDIS_URL=.../11, say)."""
    up = (read_state(layout) or {}).get(SUPERVISOR) or {}
    url = up.get("redis_url")
    return str(url) if running(up) and url else None


def down(layout: Layout, *, timeout_s: float = 60.0) -> tuple[str, int]:
    """Stop the stack: SIGTERM to ``cascade up``, then wait for it and its children to exit."""
    state = read_state(layout)
    up = (state or {}).get(SUPERVISOR) or {}
    if state is None:
        return "no stack running: nothing to stop", 0
    if not running(up):
        return _stop_orphans(state, timeout_s=timeout_s)
    pid = int(up["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not running(up) and not any(c.alive for c in _alive_children(state)):
            return f"stopped cascade up (pid {pid}) and its children", 0
        time.sleep(0.2)
    left = [c.name for c in _alive_children(state)]
    return (
        f"cascade up (pid {pid}) has not stopped after {timeout_s:.0f}s "
        f"(still running: {', '.join(left) or 'cascade up'}); see its logs in {layout.run_dir}",
        1,
    )


def _stop_orphans(state: dict[str, Any], *, timeout_s: float) -> tuple[str, int]:
    """``cascade up`` was killed (SIGKILL, OOM) and left its children running: SIGTERM them in
    reverse start order, as it would have, and wait."""
    orphans = _alive_children(state)
    if not orphans:
        return "no stack running: nothing to stop", 0
    for child in reversed(orphans):
        with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
            os.kill(int(child.pid or 0), signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive_children(state):
        time.sleep(0.2)
    left = [c.name for c in _alive_children(state)]
    names = ", ".join(c.name for c in orphans)
    if left:
        return f"cascade up was gone; {', '.join(left)} still running after SIGTERM", 1
    return f"cascade up was gone; stopped what it left running: {names}", 0


def _alive_children(state: dict[str, Any]) -> list[ChildStatus]:
    return [
        ChildStatus(name, e.get("pid"), True, False, "", "", 0)
        for name, e in state.items()
        if name != SUPERVISOR and isinstance(e, dict) and running(e)
    ]


def status_command() -> None:
    """What the stack `cascade up` started is doing: each process, readiness, model versions,
    data set, breaker state and where its log is. Exit 0 all ready, 1 none running, 2 degraded."""
    text, code = status_text(Layout.from_env())
    typer.echo(text)
    raise typer.Exit(code)


def down_command(
    timeout: float = typer.Option(
        60.0, min=1.0, help="Seconds to wait for the stack to stop before giving up (exit 1)."
    ),
) -> None:
    """Stop a stack started with `cascade up` (in the background or another terminal)."""
    text, code = down(Layout.from_env(), timeout_s=timeout)
    typer.echo(text, err=code != 0)
    raise typer.Exit(code)
