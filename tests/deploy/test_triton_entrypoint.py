"""The Triton container's command line, rendered from compose and from k8s (issue 20, items 1, 11).

``docker/triton-entrypoint.sh`` runs for real here, with the environment each deployment gives
the container (compose's ``environment:``; k8s's ConfigMap + env, the Secret's value stood in
for), a model repository whose version has its manifest, and a stand-in ``tritonserver`` on
``PATH`` that records its arguments (a fake: no container runs here; the real binary gets the
same arguments in tests/integration/test_triton_admin_api.py). The flags must restrict the same
APIs as local mode (``two_tower/triton_server.py``), behind the admin header whose value the
deployment takes from a Secret, with explicit model control.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import manifest_facts as facts
from tests.deploy.test_compose import env_of, interpolate
from tests.deploy.test_k8s import K8S, config_env, one, pod_template, render
from two_tower import manifest
from two_tower.triton_server import ADMIN_HEADER, RESTRICTED_APIS

ENTRYPOINT = facts.REPO / "docker" / "triton-entrypoint.sh"
TEST_KEY = "k" * 40

_RECORDER = """#!/bin/sh
printf '%s\\n' "$@" > "$ARGS_OUT"
"""


def tiny_repository(root: Path, versions: tuple[int, ...] = (1,)) -> Path:
    """A model repository with two_tower version folders, each with its manifest."""
    for version in versions:
        folder = root / "two_tower" / str(version)
        folder.mkdir(parents=True)
        (folder / "model.py").write_text("class TritonPythonModel:\n    pass\n")
        manifest.write_manifest(folder)
    return root


def tools_dir(root: Path) -> Path:
    """What the Triton image has in /opt/cascade: the manifest module as a script."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(manifest.__file__, root / "model_manifest.py")
    return root


def entrypoint_env(tmp: Path, container_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The container's environment, plus what this machine needs to run the script."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    recorder = bin_dir / "tritonserver"
    recorder.write_text(_RECORDER)
    recorder.chmod(0o755)
    env = dict(container_env)
    env.update(
        PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), "/usr/bin:/bin"]),
        TRITON_MODEL_REPOSITORY=str(tmp / "models"),  # /models does not exist here
        CASCADE_TOOLS_DIR=str(tools_dir(tmp / "tools")),
        TRITON_POLL_SECS="0",  # no background loader in a rendering test
        ARGS_OUT=str(tmp / "args.txt"),
    )
    env.update(extra)
    return env


def render_command(tmp: Path, container_env: dict[str, str]) -> list[str]:
    """Run the entrypoint and return the arguments it hands ``tritonserver``."""
    if not (tmp / "models").exists():
        tiny_repository(tmp / "models")
    env = entrypoint_env(tmp, container_env)
    done = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return Path(env["ARGS_OUT"]).read_text().splitlines()


def flag(args: list[str], name: str) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]


def assert_restricted(args: list[str], key: str) -> None:
    expected = f"{RESTRICTED_APIS}:{ADMIN_HEADER}={key}"
    for name in ("--http-restricted-api", "--grpc-restricted-protocol"):
        values = flag(args, name)
        assert values == [expected], f"{name}: {values}"
        apis = set(values[0].split(":", 1)[0].split(","))
        assert apis == {"model-repository", "model-config", "logging", "trace", "shared-memory"}
    assert flag(args, "--model-control-mode") == ["explicit"]
    assert flag(args, "--load-model") == ["two_tower"]
    assert not flag(args, "--repository-poll-secs")


def _compose_tritons() -> dict[str, dict[str, Any]]:
    services = yaml.safe_load((facts.REPO / "docker-compose.yml").read_text())["services"]
    return {
        name: s
        for name, s in services.items()
        if (s.get("build") or {}).get("dockerfile", "").endswith("triton.Dockerfile")
    }


def test_local_mode_restricts_the_same_apis() -> None:
    assert RESTRICTED_APIS == "model-repository,model-config,logging,trace,shared-memory"


@pytest.mark.parametrize("service", sorted(_compose_tritons()))
def test_compose_triton_command_line_restricts_the_admin_apis(service: str, tmp_path: Path) -> None:
    raw = env_of(_compose_tritons()[service])
    assert raw["TRITON_ADMIN_KEY"].startswith("${TRITON_ADMIN_KEY:?"), "must be required"
    env = {k: interpolate(v) for k, v in raw.items()}
    args = render_command(tmp_path, env)
    assert_restricted(args, env["TRITON_ADMIN_KEY"])


@pytest.mark.parametrize("overlay", ["cpu-dev", "gpu-prod"])
def test_k8s_triton_command_line_restricts_the_admin_apis(overlay: str, tmp_path: Path) -> None:
    docs = render(K8S / "overlays" / overlay)
    container = pod_template(one(docs, "Deployment", "triton"))["spec"]["containers"][0]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container.get("env", [])
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs.get("TRITON_ADMIN_KEY") == {"name": "cascade-secrets", "key": "TRITON_ADMIN_KEY"}
    assert not container.get("command") and not container.get("args"), "the image's entrypoint"
    env = dict(config_env(docs, container), TRITON_ADMIN_KEY=TEST_KEY)
    args = render_command(tmp_path, env)
    assert_restricted(args, TEST_KEY)


def test_entrypoint_refuses_to_start_without_an_admin_key(tmp_path: Path) -> None:
    tiny_repository(tmp_path / "models")
    env = entrypoint_env(tmp_path, {})
    done = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "TRITON_ADMIN_KEY" in done.stderr
    assert not Path(env["ARGS_OUT"]).exists(), "tritonserver must not start"


def test_entrypoint_refuses_a_version_that_does_not_match_its_manifest(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path / "models", versions=(1, 2))
    (repo / "two_tower" / "2" / "model.py").write_text("import os\nos.system('id')\n")
    env = entrypoint_env(tmp_path, {"TRITON_ADMIN_KEY": TEST_KEY})
    done = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "differs from the manifest" in done.stderr
    assert not Path(env["ARGS_OUT"]).exists(), "tritonserver must not start"


def test_entrypoint_starts_empty_before_the_first_export(tmp_path: Path) -> None:
    (tmp_path / "models" / "two_tower").mkdir(parents=True)
    env = entrypoint_env(tmp_path, {"TRITON_ADMIN_KEY": TEST_KEY})
    done = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    args = Path(env["ARGS_OUT"]).read_text().splitlines()
    assert not flag(args, "--load-model"), "nothing to load yet: the loader loads the first one"
    assert flag(args, "--model-control-mode") == ["explicit"]
    assert len(flag(args, "--http-restricted-api")) == 1


def test_the_image_carries_the_manifest_tool_and_the_jobs_export() -> None:
    # The export itself writes each version's manifest (tests/two_tower/test_triton_integration
    # verifies an exported folder), so the jobs need no separate step that a reader could race.
    dockerfile = (facts.REPO / "docker" / "triton.Dockerfile").read_text()
    assert "COPY two_tower/manifest.py /opt/cascade/model_manifest.py" in dockerfile
    train = yaml.safe_load((facts.REPO / "docker-compose.yml").read_text())["services"]["train"]
    assert "cascade export two-tower" in " ".join(train["command"])
    jobs = (K8S / "base" / "jobs.yaml").read_text()
    assert "cascade export two-tower" in jobs
