"""Facts about the code that the deployment files must agree with, read from the code itself.

Shared by the compose and Kubernetes tests: the settings classes and their defaults, the HTTP
routes each service really serves, the Triton ports and readiness path, and the ``cascade`` CLI.
A service whose module has not landed yet raises :class:`NotLandedError`; callers turn it into a
skip with the reason, so the check runs as soon as the module exists.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# Triton's listening ports, as docker/triton-entrypoint.sh sets them (env name -> default).
TRITON_ENTRYPOINT = REPO / "docker" / "triton-entrypoint.sh"


class NotLandedError(Exception):
    """The module a check needs does not exist yet."""


@dataclass(frozen=True)
class ServiceCode:
    """One of our Python services: its package, settings class, env prefix and app module
    (the module whose ``create_app()`` builds the service)."""

    package: str
    settings_module: str
    settings_class: str
    env_prefix: str
    app_module: str
    # Settings classes read beside the main one (module, class, env prefix): the gateway's
    # rollout settings (GATEWAY_ROLLOUT_*) are a class of their own.
    extra: tuple[tuple[str, str, str], ...] = ()

    def settings_cls(self) -> Any:
        try:
            module = importlib.import_module(self.settings_module)
        except ModuleNotFoundError as exc:
            raise NotLandedError(f"{self.settings_module} is not importable yet: {exc}") from exc
        return getattr(module, self.settings_class)

    def env_names(self) -> set[str]:
        """Every environment variable the settings class reads (field names and aliases)."""
        classes = [(self.settings_cls(), self.env_prefix)]
        for module, name, prefix in self.extra:
            classes.append((getattr(importlib.import_module(module), name), prefix))
        names: set[str] = set()
        for cls, env_prefix in classes:
            for field_name, info in cls.model_fields.items():
                names.add(f"{env_prefix}{field_name}".upper())
                alias = info.validation_alias
                choices = getattr(alias, "choices", None)
                if choices is not None:
                    names.update(str(c).upper() for c in choices)
                elif isinstance(alias, str):
                    names.add(alias.upper())
        return names

    def default_port(self) -> int:
        return int(self.settings_cls().model_fields["port"].default)

    def serves(self, path: str) -> bool:
        """True when the app the service's factory builds routes ``GET path`` (not 404/405).

        Asked over ASGI (httpx's transport) without running the lifespan: nothing is loaded,
        so a probe may answer 503 or 500, but an unknown path answers 404. It runs in a child
        process because ``create_app`` installs the process-wide OpenTelemetry provider, which
        other tests in this session may want to own.
        """
        return _status(self.app_module, path) not in (404, 405)


_STATUS_SCRIPT = """
import asyncio, importlib, json, sys
import httpx
main = importlib.import_module(sys.argv[1])
async def get(path):
    transport = httpx.ASGITransport(app=main.create_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return (await client.get(path)).status_code
print(json.dumps({p: asyncio.run(get(p)) for p in sys.argv[2:]}))
"""
_PROBE_PATHS = ("/healthz", "/readyz", "/metrics")


@functools.cache
def _statuses(app_module: str, paths: tuple[str, ...]) -> dict[str, int]:
    if importlib.util.find_spec(app_module) is None:
        raise NotLandedError(f"{app_module} does not exist yet")
    with tempfile.TemporaryDirectory() as home:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "MF_", "EVENTS_"))
        }
        env["CASCADE_HOME"] = home
        result = subprocess.run(
            [sys.executable, "-c", _STATUS_SCRIPT, app_module, *paths],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    statuses: dict[str, int] = json.loads(result.stdout.strip().splitlines()[-1])
    return statuses


def _status(app_module: str, path: str) -> int:
    paths = _PROBE_PATHS if path in _PROBE_PATHS else (path,)
    return _statuses(app_module, paths)[path]


GATEWAY = ServiceCode(
    "gateway",
    "gateway.settings",
    "GatewaySettings",
    "GATEWAY_",
    "gateway.main",
    extra=(("gateway.rollout.settings", "RolloutSettings", "GATEWAY_ROLLOUT_"),),
)
MF = ServiceCode(
    "fallback_mf", "fallback_mf.service.settings", "MfSettings", "MF_", "fallback_mf.service.main"
)
# The events consumer (issue 17): run from the job image as `python -m events`.
EVENTS = ServiceCode("events", "events.settings", "EventsSettings", "EVENTS_", "events.main")
SERVICES_BY_PREFIX = {GATEWAY.env_prefix: GATEWAY, MF.env_prefix: MF, EVENTS.env_prefix: EVENTS}


def gateway_env_settings(env: dict[str, str], *, keys_dir: Path) -> Any:
    """``GatewaySettings`` from a deployment's ``GATEWAY_*`` values, the key file moved under
    ``keys_dir`` (its container path does not exist here; a missing key file holds no keys).

    Built from init values; ``_env_prefix`` keeps the test process's ``GATEWAY_*`` variables out.
    """
    cls = GATEWAY.settings_cls()
    prefix = GATEWAY.env_prefix
    extra = tuple(p for _, _, p in GATEWAY.extra)  # GATEWAY_ROLLOUT_*: another class reads them
    values: dict[str, Any] = {
        k.removeprefix(prefix).lower(): v
        for k, v in env.items()
        if k.startswith(prefix) and not k.startswith(extra)
    }
    if values.get("api_keys_file"):
        values["api_keys_file"] = keys_dir / Path(values["api_keys_file"]).name
    # The limiter's Redis client is not needed to judge the configuration.
    values.pop("rate_limit_redis_url", None)
    return cls(_env_prefix="CASCADE_DEPLOY_TEST_UNUSED_", **values)


def gateway_security(settings: Any) -> Any:
    """The ``AuthConfig`` the gateway would enforce with ``settings``.

    Raises what the gateway raises at startup (``InsecureConfiguration``, ``KeyFileError``).
    """
    from prometheus_client import CollectorRegistry

    from gateway.edge.limits import SecurityMetrics
    from gateway.edge.security import build_security

    return build_security(settings, SecurityMetrics(CollectorRegistry())).config


def triton_ports() -> dict[str, int]:
    """``{"http": 8000, "grpc": 8001, "metrics": 8002}`` from the entrypoint's defaults."""
    text = TRITON_ENTRYPOINT.read_text()
    ports = {}
    for kind in ("http", "grpc", "metrics"):
        match = re.search(rf"--{kind}-port=\"\$\{{TRITON_{kind.upper()}_PORT:-(\d+)\}}\"", text)
        assert match, f"{TRITON_ENTRYPOINT}: no --{kind}-port default"
        ports[kind] = int(match.group(1))
    return ports


def triton_ready_path() -> str:
    from two_tower import contract

    return contract.ready_path()


def check_cascade_command(command: str) -> list[str]:
    """Parse every ``cascade ...`` invocation in a shell string against the real Typer CLI.

    Returns the problems found (unknown command, unknown option, bad value); nothing runs.
    """
    try:
        import typer.main

        from cascade.cli import app
    except ImportError as exc:
        raise NotLandedError(f"cascade.cli is not importable yet: {exc}") from exc

    # Typer vendors its own Click: use the command objects' own API, not the click package.
    root = typer.main.get_command(app)
    problems = []
    for part in re.split(r"&&|\|\||;", command):
        argv = shlex.split(part)
        if not argv or argv[0] != "cascade":
            continue
        args, cmd, path = argv[1:], root, ["cascade"]
        while hasattr(cmd, "get_command") and args and not args[0].startswith("-"):
            ctx = cmd.make_context(" ".join(path), [], resilient_parsing=True)
            sub = cmd.get_command(ctx, args[0])
            if sub is None:
                problems.append(f"{part.strip()!r}: unknown command {args[0]!r}")
                break
            cmd, path, args = sub, [*path, args[0]], args[1:]
        else:
            try:
                cmd.make_context(" ".join(path), list(args))
            except Exception as exc:  # the vendored ClickException / UsageError
                if not hasattr(exc, "format_message"):
                    raise
                problems.append(f"{part.strip()!r}: {exc.format_message()}")
    return problems
