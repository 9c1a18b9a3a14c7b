"""Static checks of docker-compose.yml and the Dockerfiles (no Docker engine runs here).

Everything the stack names must exist and agree with the code: build contexts, Dockerfiles,
bind-mounted files, ``GATEWAY_*`` / ``MF_*`` variables (real settings fields with valid values),
ports (the services' defaults or the flags they are started with), healthcheck paths (real
routes), ``depends_on`` targets and conditions, and the ``cascade`` commands of the jobs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from tests.deploy import manifest_facts as facts

REPO = facts.REPO
COMPOSE_FILE = REPO / "docker-compose.yml"

# Paths a compose file may name that exist only at run time (none are bind-mounted today:
# data, models and the Triton versions live in named volumes filled by the jobs).
GENERATED_PATHS: frozenset[str] = frozenset()

# Secrets the stack refuses to start without (``${VAR:?message}``).
REQUIRED_SECRETS = (
    "REDIS_GATEWAY_PASSWORD",
    "REDIS_MATERIALIZER_PASSWORD",
    "REDIS_EVENTS_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "GATEWAY_METRICS_TOKEN",
    "TRITON_ADMIN_KEY",
)

# Third-party images: the ports they listen on (their documented defaults).
IMAGE_PORTS = {
    "redis": {6379},
    "jaegertracing/all-in-one": {16686, 4317, 4318, 14269},
    "prom/prometheus": {9090},
    "grafana/grafana": {3000},
    "locustio/locust": {8089},
    "nats": {4222, 6222, 8222},  # clients, cluster routes, monitoring (--http_port 8222)
}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose variable substitution with the defaults; required variables get a placeholder."""

    def repl(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if op == "-":
            return arg
        return f"test-{name.lower()}"

    return _VAR.sub(repl, value)


def _walk_strings(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _walk_strings(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk_strings(v) for v in node]
    if isinstance(node, str):
        return interpolate(node)
    return node


@pytest.fixture(scope="module")
def raw_text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(raw_text: str) -> dict[str, Any]:
    doc = yaml.safe_load(raw_text)
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return _walk_strings(doc)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def our_service(service: dict[str, Any]) -> facts.ServiceCode | None:
    dockerfile = (service.get("build") or {}).get("dockerfile", "")
    if dockerfile.endswith("gateway.Dockerfile"):
        return facts.GATEWAY
    if dockerfile.endswith("fallback_mf.Dockerfile"):
        return facts.MF
    if dockerfile.endswith("job.Dockerfile") and service.get("entrypoint") == [
        "python", "-m", "events",
    ]:  # fmt: skip
        return facts.EVENTS
    return None


def listening_ports(name: str, service: dict[str, Any]) -> set[int]:
    """The ports a service's process listens on, from its settings/flags or the image's docs."""
    code = our_service(service)
    env = env_of(service)
    if code is not None:
        value = env.get(f"{code.env_prefix}PORT")
        return {int(value) if value else code.default_port()}
    dockerfile = (service.get("build") or {}).get("dockerfile", "")
    if dockerfile.endswith("triton.Dockerfile"):
        ports = facts.triton_ports()
        return {int(env.get(f"TRITON_{k.upper()}_PORT", v)) for k, v in ports.items()}
    if dockerfile.endswith("job.Dockerfile"):
        return set()
    image = service.get("image", "").split(":")[0]
    assert image in IMAGE_PORTS, f"{name}: unknown image {image!r}, add its ports to IMAGE_PORTS"
    return IMAGE_PORTS[image]


def host_names(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Every DNS name on the compose network -> its service (service names and aliases)."""
    names = {name: name for name in services}
    for name, service in services.items():
        for net in (service.get("networks") or {}).values():
            for alias in (net or {}).get("aliases", []):
                names[alias] = name
    return names


# ---- structure and files --------------------------------------------------------------------


def test_compose_parses_and_has_the_stack(services: dict[str, dict[str, Any]]) -> None:
    images = " ".join(str(s.get("image", "")) + str(s.get("build", "")) for s in services.values())
    for needed in (
        "redis",
        "job.Dockerfile",
        "triton.Dockerfile",
        "fallback_mf.Dockerfile",
        "gateway.Dockerfile",
        "jaeger",
        "prometheus",
        "grafana",
        "locust",
    ):
        assert needed in images, f"docker-compose.yml has no {needed} service"


def test_required_secrets_are_marked(raw_text: str) -> None:
    for secret in REQUIRED_SECRETS:
        assert re.search(rf"\$\{{{secret}:\?[^}}]+\}}", raw_text), (
            f"{secret} is not ${{{secret}:?...}}"
        )
    # ...and a secret-looking variable never gets a literal value in the file: it is required
    # (``${VAR:?msg}``) or, in a profile-gated service, empty by default (``${VAR:-}``; compose
    # checks ``:?`` even when the profile is off). ``*_FILE`` variables are paths, not secrets.
    for name, service in yaml.safe_load(raw_text)["services"].items():
        for key, value in env_of(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", key) and not key.endswith("_FILE"):
                allowed = r"\$\{\w+:\?[^}]+\}" + (
                    r"|\$\{\w+:-\}" if service.get("profiles") else ""
                )
                assert re.fullmatch(allowed, value), f"{name}: {key} has a literal value"


def test_build_contexts_and_dockerfiles_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            assert ":" in service["image"], f"{name}: third-party image without a pinned tag"
            assert not service["image"].endswith(":latest"), f"{name}: pin a version, not latest"
            continue
        context = REPO / build["context"]
        assert context.is_dir(), f"{name}: build context {context} is missing"
        assert (context / build["dockerfile"]).is_file(), (
            f"{name}: {build['dockerfile']} is missing"
        )


def test_bind_mount_sources_exist(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/")):
                assert source in named, f"{name}: volume {source!r} is not declared"
                continue
            rel = str(Path(source).relative_to(".")) if source.startswith(".") else source
            if rel in GENERATED_PATHS:
                continue
            assert (REPO / rel).exists(), f"{name}: bind-mount source {source} does not exist"


def test_dockerfile_sources_exist_and_pass_dockerignore() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for dockerfile in sorted((REPO / "docker").glob("*.Dockerfile")):
        text = dockerfile.read_text()
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE):
            parts = [p for p in line.split() if not p.startswith("--")]
            for source in parts[:-1]:
                assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
                top = Path(source).parts[0]
                assert top in allowed, f"{dockerfile.name}: {source} is excluded by .dockerignore"


def test_dockerfiles_are_pinned_nonroot_and_healthchecked() -> None:
    for dockerfile in sorted((REPO / "docker").glob("*.Dockerfile")):
        text = dockerfile.read_text()
        for image in re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, flags=re.MULTILINE):
            tag = image.rsplit(":", 1)[-1]
            assert tag != "latest" and re.search(r"\d", tag), f"{dockerfile.name}: unpinned {image}"
        users = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
        assert users and not users[-1].startswith(("root", "0")), f"{dockerfile.name}: runs as root"
        if dockerfile.name != "job.Dockerfile":
            assert "HEALTHCHECK" in text, f"{dockerfile.name}: no HEALTHCHECK"
        if dockerfile.name in {"gateway.Dockerfile", "fallback_mf.Dockerfile"}:
            assert "OPENBLAS_NUM_THREADS=1" in text


# ---- settings, ports, routes -------------------------------------------------------------------


def test_service_env_vars_are_real_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = 0
    for name, service in services.items():
        env = env_of(service)
        for prefix, code in facts.SERVICES_BY_PREFIX.items():
            ours = {k: v for k, v in env.items() if k.startswith(prefix)}
            if not ours:
                continue
            try:
                known = code.env_names()
            except facts.NotLandedError as exc:
                pytest.skip(str(exc))
            unknown = sorted(set(ours) - known)
            assert not unknown, f"{name}: {unknown} are not fields of {code.settings_class}"
            # The values must also pass the settings' own validation.
            with monkeypatch.context() as m:
                for key in list(os.environ):
                    if key.startswith(prefix):
                        m.delenv(key)
                for key, value in env.items():
                    m.setenv(key, value)
                code.settings_cls()()
            checked += 1
    assert checked >= 2, "expected the gateway and the MF service to be configured"


def test_ports_match_what_the_processes_listen_on(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        listening = listening_ports(name, service)
        for mapping in service.get("ports", []):
            container_port = int(str(mapping).rsplit(":", 1)[-1].split("/")[0])
            assert container_port in listening, (
                f"{name}: publishes {container_port}, listens on {listening}"
            )


def test_urls_between_services_resolve(services: dict[str, dict[str, Any]]) -> None:
    names = host_names(services)
    pattern = re.compile(r"^(?:[a-z]+://)?(?:[^@/]*@)?([a-z][a-z0-9-]*):(\d+)(?:/.*)?$")
    found = 0
    for name, service in services.items():
        values = list(env_of(service).values()) + [str(c) for c in service.get("command") or []]
        for value in values:
            for token in value.split():
                match = pattern.match(token)
                if not match or match.group(1) not in names:
                    continue
                target = names[match.group(1)]
                port = int(match.group(2))
                listening = listening_ports(target, services[target])
                assert port in listening, f"{name}: {token} but {target} listens on {listening}"
                found += 1
    assert found >= 5


def _healthchecks(services: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    return [(name, s["healthcheck"]["test"]) for name, s in services.items() if "healthcheck" in s]


def test_healthchecks_hit_real_routes_on_real_ports(services: dict[str, dict[str, Any]]) -> None:
    for name, test in _healthchecks(services):
        service = services[name]
        if "/app/docker/healthcheck.py" in test or "/opt/cascade/healthcheck.py" in test:
            port_env, default_port, path = test[-3:]
            port = int(env_of(service).get(port_env, default_port))
            assert port in listening_ports(name, service), f"{name}: healthcheck on port {port}"
            code = our_service(service)
            if code is None:
                assert path == facts.triton_ready_path(), f"{name}: Triton healthcheck {path}"
                continue
            assert port_env == f"{code.env_prefix}PORT"
            try:
                served = code.serves(path)
            except facts.NotLandedError as exc:
                pytest.skip(str(exc))
            assert served, f"{name}: healthcheck path {path} is not a route of {code.package}"
        else:
            urls = [t for t in test if t.startswith("http")]
            for url in urls:
                port = urlparse(url).port
                assert port in listening_ports(name, service), f"{name}: healthcheck {url}"


def test_image_healthchecks_use_real_routes() -> None:
    for dockerfile, code in (
        ("gateway.Dockerfile", facts.GATEWAY),
        ("fallback_mf.Dockerfile", facts.MF),
    ):
        text = (REPO / "docker" / dockerfile).read_text()
        match = re.search(r'healthcheck.py", "(\w+)", "(\d+)", "([^"]+)"', text)
        assert match, f"{dockerfile}: HEALTHCHECK does not use docker/healthcheck.py"
        port_env, port, path = match.groups()
        assert port_env == f"{code.env_prefix}PORT"
        assert f"EXPOSE {port}" in text
        try:
            assert int(port) == code.default_port() or f"{port_env}={port}" in text
            assert code.serves(path), f"{dockerfile}: {path} is not a route"
        except facts.NotLandedError as exc:
            pytest.skip(str(exc))
    triton = (REPO / "docker" / "triton.Dockerfile").read_text()
    assert f'"{facts.triton_ready_path()}"' in triton


# ---- wiring ----------------------------------------------------------------------------------


def test_depends_on_targets_and_conditions(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            assert condition in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target} to be healthy, it has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", (
                    f"{target} is a job, it must not restart"
                )
            if services[target].get("profiles") and not set(services[target]["profiles"]) & set(
                service.get("profiles", [])
            ):
                assert spec.get("required") is False, (
                    f"{name} needs {target}, which only runs in a profile"
                )


def test_gpu_and_cpu_triton_variants(services: dict[str, dict[str, Any]]) -> None:
    gpu = [s for s in services.values() if "gpu" in s.get("profiles", [])]
    cpu = [s for s in services.values() if "cpu" in s.get("profiles", [])]
    assert len(gpu) == 1 and len(cpu) == 1
    devices = gpu[0]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert env_of(gpu[0])["TRITON_MODEL_CONFIG_NAME"] == "gpu"
    gpu_config = REPO / "triton_models" / "two_tower" / "configs" / "gpu.pbtxt"
    if not gpu_config.is_file():
        pytest.skip("triton_models/two_tower/configs/gpu.pbtxt not generated yet")
    assert "KIND_GPU" in gpu_config.read_text()


def test_jaeger_accepts_otlp(services: dict[str, dict[str, Any]]) -> None:
    jaeger = next(s for s in services.values() if s.get("image", "").startswith("jaegertracing/"))
    assert env_of(jaeger)["COLLECTOR_OTLP_ENABLED"] == "true"
    published = {int(str(p).rsplit(":", 1)[-1]) for p in jaeger["ports"]}
    assert {4317, 4318} <= published


def test_job_commands_parse_with_the_cli(services: dict[str, dict[str, Any]]) -> None:
    problems = []
    for name, service in services.items():
        if not (service.get("build") or {}).get("dockerfile", "").endswith("job.Dockerfile"):
            continue
        for command in service.get("command") or []:
            try:
                problems += [f"{name}: {p}" for p in facts.check_cascade_command(command)]
            except facts.NotLandedError as exc:
                pytest.skip(str(exc))
    assert not problems, "\n".join(problems)


def _mount_target(service: dict[str, Any], source_suffix: str) -> str:
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if parts[0].endswith(source_suffix):
            return parts[1]
    raise AssertionError(f"{source_suffix} is not mounted")


def test_prometheus_scrapes_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    prometheus = next(s for s in services.values() if s.get("image", "").startswith("prom/"))
    config_path = _mount_target(prometheus, "prometheus.yml")
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert f"--config.file={config_path}" in prometheus["command"]
    mounted = {v.split(":")[1] for v in prometheus["volumes"]}
    for rule_file in config.get("rule_files", []):
        assert str(Path(config_path).parent / rule_file) in mounted, f"{rule_file} is not mounted"
    names = host_names(services)
    jobs = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host in {"127.0.0.1", "localhost"}:
                    continue
                assert host in names, f"{job['job_name']}: {host} is no compose service"
                service = names[host]
                assert int(port) in listening_ports(service, services[service]), target
                jobs.add(service)
    assert {"gateway", "fallback-mf"} <= jobs and {"triton", "triton-cpu"} & jobs


def test_grafana_provisioning_matches_the_mounts(services: dict[str, dict[str, Any]]) -> None:
    grafana = next(s for s in services.values() if s.get("image", "").startswith("grafana/"))
    providers = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text()
    )["providers"]
    dashboard = _mount_target(grafana, "cascade.json")
    assert any(str(Path(dashboard).parent) == p["options"]["path"] for p in providers)
    datasources = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/datasource.yml").read_text()
    )["datasources"]
    names = host_names(services)
    for source in datasources:
        url = urlparse(source["url"])
        assert url.hostname in names, f"datasource {source['name']}: {url.hostname}"
        target = names[url.hostname]
        assert url.port in listening_ports(target, services[target])


# Distribution name -> import name, where they differ.
_IMPORT_NAMES = {"PyYAML": "yaml", "opentelemetry-api": "opentelemetry", "hiredis": "hiredis"}

_BLOCKER = """
import importlib, importlib.abc, sys
blocked = set(sys.argv[3].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not installed in this image")
sys.meta_path.insert(0, Blocker())
importlib.import_module(sys.argv[1] + ".__main__")
importlib.import_module(sys.argv[2]).create_app()
"""


def _requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        name = re.split(r"[\[=<>~! ]", requirement, maxsplit=1)[0]
        if name == "cascade":
            continue
        names.add(_IMPORT_NAMES.get(name, name.replace("-", "_")))
    return names


@pytest.mark.parametrize(
    ("dockerfile", "code"),
    [("gateway.Dockerfile", facts.GATEWAY), ("fallback_mf.Dockerfile", facts.MF)],
    ids=["gateway", "fallback_mf"],
)
def test_service_images_install_everything_their_code_imports(
    dockerfile: str, code: facts.ServiceCode, tmp_path: Path
) -> None:
    """Build the app with every package of the OTHER extras made unimportable."""
    import subprocess
    import sys
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    text = (REPO / "docker" / dockerfile).read_text()
    wanted = set(re.search(r"'\.\[([a-z,]+)\]'", text).group(1).split(","))
    installed = _requirement_names(project["dependencies"])
    for extra in wanted:
        installed |= _requirement_names(extras[extra])
    others = set()
    for extra, requirements in extras.items():
        if extra not in wanted and extra not in {"all", "dev"}:
            others |= _requirement_names(requirements)
    blocked = sorted(others - installed)
    assert blocked, "nothing to block: the extras changed shape"
    script = tmp_path / "blocker.py"
    script.write_text(_BLOCKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "MF_"))}
    env["CASCADE_HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, str(script), code.package, code.app_module, ",".join(blocked)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"blocked {blocked}:\n{result.stderr[-3000:]}"


def test_triton_model_runs_on_the_triton_images_python() -> None:
    """The production Triton image (24.10) embeds Python 3.10 in the Python-backend stub."""
    import ast

    text = (REPO / "docker" / "triton.Dockerfile").read_text()
    assert "Python 3.10" in text and "tritonserver:24.10-py3" in text
    for model in sorted((REPO / "triton_models").glob("*/model.py")):
        ast.parse(model.read_text(), filename=str(model), feature_version=(3, 10))
        assert "from datetime import UTC" not in model.read_text(), f"{model}: UTC is 3.11+"


def test_locust_runs_the_repo_locustfile_with_what_its_image_has(
    services: dict[str, dict[str, Any]],
) -> None:
    """The locust service runs loadtests/locustfile.py in the stock locustio/locust image."""
    import ast
    import sys

    locust = next(s for s in services.values() if s.get("image", "").startswith("locustio/"))
    assert locust["profiles"] == ["loadtest"]
    command = locust["command"]
    in_container = Path(locust["working_dir"]) / command[command.index("-f") + 1]
    source = _mount_target(locust, "loadtests")
    assert str(in_container).startswith(source + "/")
    locustfile = REPO / "loadtests" / in_container.relative_to(source)
    if not locustfile.is_file():
        pytest.skip("loadtests/locustfile.py has not landed yet")
    # The stock image has locust (and its dependencies) but not Cascade's packages.
    allowed = set(sys.stdlib_module_names) | {"locust", "gevent", "loadtests", "__future__"}
    for module in sorted((REPO / "loadtests").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in allowed, f"{module.name} imports {name}, absent from the locust image"


def test_our_containers_are_hardened(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" not in service:
            continue
        assert service.get("read_only") is True, f"{name}: read-only root filesystem"
        assert "/tmp" in service.get("tmpfs", []), f"{name}: /tmp tmpfs"
        assert service.get("cap_drop") == ["ALL"], f"{name}: drop all capabilities"
        assert "no-new-privileges:true" in service.get("security_opt", []), name


# ---- API security (docs/security.md, docs/deployment.md section 2) ------------------------------


def _gateway(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return next(s for s in services.values() if our_service(s) is facts.GATEWAY)


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read-only) for the service's volumes (short syntax)."""
    out = {}
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        out[parts[1]] = (parts[0], len(parts) > 2 and "ro" in parts[2].split(","))
    return out


def test_gateway_starts_with_auth_on_and_its_key_file_from_the_keys_volume(
    services: dict[str, dict[str, Any]], compose: dict[str, Any], tmp_path: Path
) -> None:
    """Auth on (a key file, never GATEWAY_AUTH_ENABLED=false) on 0.0.0.0; the file's folder is
    a named volume, read-only in the gateway, written by the `keys` tool service."""
    gateway = _gateway(services)
    env = env_of(gateway)
    assert env.get("GATEWAY_AUTH_ENABLED", "").lower() not in {"false", "0", "no", "off"}
    keys_file = Path(env["GATEWAY_API_KEYS_FILE"])
    mounts = _mounts(gateway)
    source, read_only = mounts[str(keys_file.parent)]
    assert source in (compose.get("volumes") or {}), "the key file's folder is a named volume"
    assert read_only, "the gateway mounts its key file read-only"
    try:
        settings = facts.gateway_env_settings(env, keys_dir=tmp_path)
        config = facts.gateway_security(settings)
    except facts.NotLandedError as exc:
        pytest.skip(str(exc))
    assert settings.host == "0.0.0.0" and config.enabled and config.keyring is not None
    assert config.metrics_token, "GATEWAY_METRICS_TOKEN is set"
    assert env.get("GATEWAY_RATE_LIMIT_REDIS_URL", "").startswith("redis://")

    keys = services["keys"]
    assert keys["build"]["dockerfile"].endswith("job.Dockerfile") and keys["profiles"] == ["tools"]
    assert keys["entrypoint"] == ["cascade", "keys"]
    assert env_of(keys)["GATEWAY_API_KEYS_FILE"] == str(keys_file)
    assert _mounts(keys)[str(keys_file.parent)] == (source, False)
    problems = facts.check_cascade_command(
        " ".join([*keys["entrypoint"], *keys["command"]])
    ) + facts.check_cascade_command(f"cascade keys create --client web --keys-file {keys_file}")
    assert not problems, problems
    # Both images own the mount point, so the empty volume is writable by uid 10001.
    for dockerfile in ("job.Dockerfile", "gateway.Dockerfile"):
        text = (REPO / "docker" / dockerfile).read_text()
        assert re.search(
            rf"install -d -o 10001 -g 10001 .*{re.escape(str(keys_file.parent))}", text
        )


def test_prometheus_presents_the_gateway_metrics_token(
    services: dict[str, dict[str, Any]], raw_text: str
) -> None:
    """The gateway job sends `Authorization: Bearer` from a file that is the compose secret
    made from GATEWAY_METRICS_TOKEN, the variable the gateway reads."""
    raw = yaml.safe_load(raw_text)
    token_var = re.fullmatch(
        r"\$\{(\w+):\?[^}]+\}", env_of(raw["services"]["gateway"])["GATEWAY_METRICS_TOKEN"]
    )
    assert token_var, "GATEWAY_METRICS_TOKEN is a required variable"
    prometheus = next(s for s in services.values() if s.get("image", "").startswith("prom/"))
    config_dir = Path(_mount_target(prometheus, "prometheus.yml")).parent
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "gateway"]
    auth = job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer" and "credentials" not in auth
    in_container = config_dir / auth["credentials_file"]
    targets = {}
    for item in prometheus.get("secrets", []):
        target = item.get("target", item["source"])
        targets[target if target.startswith("/") else f"/run/secrets/{target}"] = item["source"]
    secret = targets.get(str(in_container))
    assert secret, f"{in_container} is not a secret of the prometheus service"
    assert raw["secrets"][secret] == {"environment": token_var.group(1)}
    # The repository's stand-in (promtool needs the file) holds no token.
    assert (REPO / "deploy" / "prometheus" / auth["credentials_file"]).read_text().strip() == ""


def test_env_example_has_every_required_variable_and_a_token_placeholder_that_fails() -> None:
    """Every ${VAR:?} of the compose file is in docker/env.example, and the metrics token's
    placeholder is rejected by the gateway (it cannot be left in by mistake)."""
    example = dict(
        line.split("=", 1)
        for line in (REPO / "docker" / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    code = "\n".join(
        line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    required = set(re.findall(r"\$\{(\w+):\?", code))
    assert required <= set(example), f"missing from env.example: {required - set(example)}"
    assert "CASCADE_LOADTEST_API_KEY" in example
    try:
        cls = facts.GATEWAY.settings_cls()
    except facts.NotLandedError as exc:
        pytest.skip(str(exc))
    with pytest.raises(ValueError, match="metrics_token"):
        cls(
            _env_prefix="CASCADE_DEPLOY_TEST_UNUSED_",
            metrics_token=example["GATEWAY_METRICS_TOKEN"],
        )


def test_locust_sends_an_api_key(services: dict[str, dict[str, Any]], raw_text: str) -> None:
    locust = next(
        s
        for s in yaml.safe_load(raw_text)["services"].values()
        if s.get("image", "").startswith("locustio/")
    )
    assert re.fullmatch(r"\$\{\w+[:?-][^}]*\}", env_of(locust)["CASCADE_API_KEY"])
    locustfile = REPO / "loadtests" / "locustfile.py"
    if locustfile.is_file():
        assert "CASCADE_API_KEY" in locustfile.read_text()
