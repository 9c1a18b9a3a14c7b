"""Supply chain (issue 20, item 8): hashed installs, one index per package, digests, the backend.

Static: the Dockerfiles, the hash locks, pyproject's [build-system] and the gpu-prod overlay are
read and checked; ``docker/check_image_digests.py`` runs on the overlay as committed (its
placeholders must fail) and on a copy with digests set (must pass).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy import kustomize_lite as kustomize
from tests.deploy import manifest_facts as facts

REPO = facts.REPO
DOCKER = REPO / "docker"
GPU_PROD = REPO / "k8s" / "overlays" / "gpu-prod"
HASHED_IMAGES = {"gateway.Dockerfile": "gateway", "fallback_mf.Dockerfile": "mf"}
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)")


def _lock_pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def _entries(text: str) -> list[str]:
    """A requirements file's entries, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def test_build_backend_is_pinned() -> None:
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    assert build["requires"], "no build requirements"
    for requirement in build["requires"]:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][^,;<>=!~*]*", requirement), requirement


@pytest.mark.parametrize(("dockerfile", "lock"), sorted(HASHED_IMAGES.items()))
def test_service_images_install_only_hash_locked_files(dockerfile: str, lock: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    installs = re.findall(r"pip install ([^\n]*(?:\\\n[^\n]*)*)", text)
    assert installs, f"{dockerfile}: no pip install"
    for install in installs:
        assert "--require-hashes" in install, f"{dockerfile}: unhashed install {install!r}"
        assert f"-r {lock}.txt" in install
        assert "--index-url" not in install and "--extra-index-url" not in install
    assert f"COPY docker/locks/{lock}.txt" in text
    entries = _entries((DOCKER / "locks" / f"{lock}.txt").read_text())
    assert entries
    for entry in entries:
        assert re.search(r"==\S+ .*--hash=sha256:[0-9a-f]{64}", entry), f"{lock}: {entry!r}"


@pytest.mark.parametrize("lock", sorted(HASHED_IMAGES.values()))
def test_hash_locks_agree_with_requirements_lock_and_cover_the_extra(lock: str) -> None:
    """The hashed files are the development pins: a lock change without regenerating fails."""
    hashed = _lock_pins((DOCKER / "locks" / f"{lock}.txt").read_text())
    pins = _lock_pins((REPO / "requirements.lock").read_text())
    differ = {n: (v, pins[n]) for n, v in hashed.items() if n in pins and pins[n] != v}
    assert not differ, f"docker/locks/{lock}.txt is stale (hashed, lock): {differ}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = project["dependencies"] + project["optional-dependencies"][lock]
    for requirement in direct:
        name = re.split(r"[\[=<>!~ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in hashed, f"{lock}: {name} is a direct dependency but not in the lock"


def test_triton_image_takes_each_package_from_one_index() -> None:
    text = (DOCKER / "triton.Dockerfile").read_text()
    installs = re.findall(r"pip install ([^&]*)", text)
    assert len(installs) == 2, installs
    assert "--extra-index-url" not in text
    torch, rest = installs
    assert "--no-deps" in torch and '--index-url "${TORCH_INDEX_URL}"' in torch
    assert "--index-url https://pypi.org/simple" in rest and "TORCH_INDEX_URL" not in rest
    assert re.search(r'"numpy==\d', rest), "numpy pinned"


def test_gpu_prod_images_are_digests_and_placeholders_fail_the_gate(tmp_path: Path) -> None:
    docs = kustomize.build(GPU_PROD)
    images = {
        c["image"]
        for d in docs
        if d["kind"] in {"Deployment", "CronJob", "StatefulSet"}
        for c in (
            d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            if d["kind"] == "CronJob"
            else d["spec"]["template"]["spec"]
        )["containers"]
    }
    assert images and all("@sha256:" in image for image in images), images
    gate = [sys.executable, str(DOCKER / "check_image_digests.py")]
    committed = subprocess.run([*gate, str(GPU_PROD)], capture_output=True, text=True)
    assert committed.returncode == 1 and "cascade/gateway" in committed.stderr
    copy = tmp_path / "gpu-prod"
    shutil.copytree(GPU_PROD, copy)
    kustomization = copy / "kustomization.yaml"
    text = kustomization.read_text()
    for n in range(text.count("sha256:UNSET-set-the-pushed-digest")):
        text = text.replace("sha256:UNSET-set-the-pushed-digest", f"sha256:{n + 1:064x}", 1)
    kustomization.write_text(text)
    assert subprocess.run([*gate, str(copy)], capture_output=True).returncode == 0
    zeros = text.replace(f"sha256:{1:064x}", "sha256:" + "0" * 64)
    kustomization.write_text(zeros)
    assert subprocess.run([*gate, str(copy)], capture_output=True).returncode == 1
