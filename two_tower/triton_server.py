"""Run the real ``tritonserver`` without Docker (docs/platform-notes.md, "Triton without Docker").

The binary and the Python backend ship inside the ``nvidia-pytriton`` wheel, installed with
``--no-deps``; we locate them on disk without importing ``pytriton`` (its import needs numpy<2).
:func:`prepare_backends` builds ``var/triton/backends/python`` (backend library + the stub built
for the running Python), :func:`server_env` sets what the stub needs (``LD_LIBRARY_PATH`` with
the interpreter's ``LIBDIR``, the virtualenv's ``bin`` first on ``PATH`` so the stub's embedded
Python finds torch), and :class:`TritonProcess` starts, waits for
``/v2/models/two_tower/ready`` and stops the server.

Flags: ``--model-control-mode=poll`` every ``POLL_SECS`` (every model in the repository loads
at start, and a version ``cascade export two-tower`` adds, or prunes, is loaded or unloaded within
seconds, so a rollout can address it; the export renames a finished folder into place, so a poll
never sees half a version; nothing can be loaded or unloaded over the network; the repository's
models are ``two_tower`` and ``two_tower_similar``, whose versions :class:`TritonProcess` makes
mirror the Two-Tower's before starting, ``two_tower.similar_export``), ``--exit-on-error=true`` (a model that fails to load
stops the server instead of leaving it half-up), and the repository, model-config and logging
APIs restricted on HTTP and gRPC to callers sending the admin header (``TRITON_ADMIN_KEY``; a
random one when unset). With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, Triton exports OpenTelemetry
traces there and joins the caller's trace through ``traceparent``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from cascade.runtime.paths import Layout
from cascade.runtime.procs import ManagedProcess, free_port, http_ok
from two_tower import contract
from two_tower.model_bytecode import compile_repository

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "triton_models"
ADMIN_HEADER = "triton-admin-key"
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
EXIT_TIMEOUT_S = 5  # how long a stopping server waits for in-flight requests and open connections
RESTRICTED_APIS = "model-repository,model-config,logging,trace,shared-memory"


class TritonNotInstalledError(RuntimeError):
    """The tritonserver binary is not where the nvidia-pytriton wheel puts it."""


def pytriton_root() -> Path:
    """``.../site-packages/pytriton/tritonserver``, found without importing ``pytriton``."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalledError(
            "nvidia-pytriton is not installed: run `make install` "
            "(pip install --no-deps nvidia-pytriton==0.7.0)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonNotInstalledError(f"no tritonserver binary under {root}")
    return root


def tritonserver_binary() -> Path:
    """Path of the ``tritonserver`` executable."""
    return pytriton_root() / "bin" / "tritonserver"


def python_version_tag() -> str:
    """``3.11`` for the running interpreter: the stub folder to use."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def prepare_backends(target: Path) -> Path:
    """Copy the Python backend and this Python's stub into ``target/python``; returns ``target``.

    Idempotent: files already there with the same size are left alone.
    """
    root = pytriton_root()
    stub = root / "python_backend_stubs" / python_version_tag() / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonNotInstalledError(
            f"no Python backend stub for Python {python_version_tag()} at {stub}"
        )
    dest = target / "python"
    dest.mkdir(parents=True, exist_ok=True)
    sources = [p for p in (root / "backends" / "python").iterdir() if p.is_file()] + [stub]
    for src in sources:
        out = dest / src.name
        if not out.is_file() or out.stat().st_size != src.stat().st_size:
            shutil.copy2(src, out)
    return target


def server_env(base: dict[str, str] | None = None, *, threads: int = 1) -> dict[str, str]:
    """Environment for tritonserver: libpython and the wheel's libs on LD_LIBRARY_PATH, venv bin first on PATH."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    # The stub finds its bundled libraries (libcudart) through an $ORIGIN-relative RPATH that
    # no longer holds once it is copied next to the backend: name that folder explicitly.
    bundled = str(pytriton_root().parents[1] / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, bundled, env.get("LD_LIBRARY_PATH", "")) if p
    )
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in (venv_bin, env.get("PATH", "")) if p)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, str(threads))
    return env


@dataclass
class TritonSettings:
    """Where and how to run tritonserver. Ports 0 mean "pick a free one"."""

    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    backends_dir: Path | None = None  # default: <CASCADE_HOME>/triton/backends
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    model_config_name: str | None = None  # "gpu" selects configs/gpu.pbtxt
    admin_key: str = field(
        default_factory=lambda: os.environ.get(ADMIN_KEY_ENV) or secrets.token_hex(16)
    )
    log_verbose: int = 0
    otlp_endpoint: str | None = field(
        default_factory=lambda: os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    trace_rate: int = 1

    def resolved(self) -> TritonSettings:
        """A copy with free ports chosen for the zero ones and the backends folder set."""
        backends = self.backends_dir or Layout.from_env().home / "triton" / "backends"
        return TritonSettings(
            model_repository=Path(self.model_repository).resolve(),
            backends_dir=Path(backends).resolve(),
            http_port=self.http_port or free_port(),
            grpc_port=self.grpc_port or free_port(),
            metrics_port=self.metrics_port or free_port(),
            host=self.host,
            model_config_name=self.model_config_name,
            admin_key=self.admin_key,
            log_verbose=self.log_verbose,
            otlp_endpoint=self.otlp_endpoint,
            trace_rate=self.trace_rate,
        )


def _otlp_traces_url(endpoint: str) -> str:
    """Triton wants ``host:port/v1/traces``; OTEL_EXPORTER_OTLP_ENDPOINT is ``http://host:port``."""
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    return url.split("://", 1)[-1]


POLL_SECS = 5  # a new export is served within this (plus its load time)


def server_args(settings: TritonSettings) -> list[str]:
    """Command line for ``tritonserver`` (settings already resolved)."""
    assert settings.backends_dir is not None
    restricted = f"{RESTRICTED_APIS}:{ADMIN_HEADER}={settings.admin_key}"
    args = [
        str(tritonserver_binary()),
        f"--model-repository={settings.model_repository}",
        f"--backend-directory={settings.backends_dir}",
        "--model-control-mode=poll",
        f"--repository-poll-secs={POLL_SECS}",
        "--exit-on-error=true",
        "--strict-readiness=true",
        f"--http-address={settings.host}",
        f"--http-port={settings.http_port}",
        f"--grpc-address={settings.host}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-address={settings.host}",
        f"--metrics-port={settings.metrics_port}",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
        f"--log-verbose={settings.log_verbose}",
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
    ]
    if settings.model_config_name:
        args.append(f"--model-config-name={settings.model_config_name}")
    if settings.otlp_endpoint:
        args += [
            "--trace-config=mode=opentelemetry",
            f"--trace-config=rate={settings.trace_rate}",
            "--trace-config=level=TIMESTAMPS",
            f"--trace-config=opentelemetry,url={_otlp_traces_url(settings.otlp_endpoint)}",
            "--trace-config=opentelemetry,resource=service.name=triton",
        ]
    return args


def _sync_similar(repository: Path) -> None:
    """Give ``two_tower_similar`` the Two-Tower's versions before the server starts, when the
    repository has that model (a repository exported before it existed has its folder from git,
    but no versions, and poll mode stops the server on a model without one)."""
    from two_tower import similar_export

    if similar_export.model_dir(repository).is_dir():
        similar_export.sync_versions(repository)


class TritonProcess(ManagedProcess):
    """A tritonserver child process: ``start()``, ``wait_ready()``, ``stop()`` (TERM, then KILL)."""

    def __init__(
        self, settings: TritonSettings | None = None, *, log_path: Path | None = None
    ) -> None:
        self.settings = (settings or TritonSettings()).resolved()
        assert self.settings.backends_dir is not None
        prepare_backends(self.settings.backends_dir)
        _sync_similar(self.settings.model_repository)
        # else each model.py import writes bytecode into its version folder and the poll reloads
        compile_repository(self.settings.model_repository)
        super().__init__(
            "tritonserver",
            server_args(self.settings),
            log_path=log_path or Layout.from_env().run_dir / "tritonserver.log",
            env=server_env(),
        )

    @property
    def http_url(self) -> str:
        return f"{self.settings.host}:{self.settings.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.settings.host}:{self.settings.grpc_port}"

    def stop(self, *, grace: float = EXIT_TIMEOUT_S + 5.0) -> int | None:
        """SIGTERM (Triton drains for up to EXIT_TIMEOUT_S), then SIGKILL after ``grace``."""
        return super().stop(grace=grace)

    def model_ready(self, model: str = contract.MODEL_NAME) -> bool:
        """True when ``/v2/models/<model>/ready`` answers 200."""
        return http_ok(f"http://{self.http_url}{contract.ready_path(model)}")

    def wait_ready(
        self, url: str | None = None, *, timeout: float = 120.0, interval: float = 0.25
    ) -> None:
        """Wait until the Two-Tower model (or ``url``) is ready; ProcessError with the log otherwise."""
        super().wait_ready(
            url or f"http://{self.http_url}{contract.ready_path()}",
            timeout=timeout,
            interval=interval,
        )
