"""A sha256 manifest per Triton version folder, checked before Triton loads it (issue 20, item 11).

A version folder of the model repository is executable code (``model.py`` runs in Triton's
Python backend, ``user_tower.pt`` is a TorchScript program), written by a job on a shared
volume. Triton runs with ``--model-control-mode=explicit``: nothing in the repository loads
unless asked, and asking (``POST /v2/repository/models/<model>/load``) needs the admin header.
This module is what asks, after checking the folders:

* :func:`write_manifest` writes ``MANIFEST.sha256`` into a version folder: one
  ``<sha256>  <relative path>`` line per file, sorted (the ``sha256sum -c`` format). The export
  writes it last, so a folder without one is incomplete.
* :func:`verify_manifest` refuses a folder whose files differ from its manifest: a changed,
  missing or extra file (``__pycache__`` folders excepted: the Python backend may write them
  where the volume is writable; in containers it is mounted read-only).
* :func:`verify_model` checks every version folder of a model (Triton's ``version_policy`` may
  serve more than the newest), :func:`load_model` asks Triton to load, and ``watch`` does both
  in a loop: the container entrypoint starts it next to ``tritonserver``.

What this protects against: a half-written or truncated version, a file replaced or added after
the export (by anything that does not also rewrite the manifest). What it does not: a writer
that can rewrite the manifest too (that needs a signature with a key the writer of the volume
does not hold; docs/security.md).

Standard library only, Python 3.10 compatible: the Triton image runs this file as a script
with its system Python (``/opt/cascade/model_manifest.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.sha256"
ADMIN_HEADER = "triton-admin-key"  # two_tower/triton_server.py uses the same header
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
IGNORED_DIRS = frozenset({"__pycache__"})
_CHUNK = 1 << 20


class ManifestError(RuntimeError):
    """A version folder does not match its manifest, or has none."""


def _files(version_dir: Path) -> list[str]:
    """Every regular file under ``version_dir`` (relative, '/'-separated), manifest excluded."""
    out = []
    for root, dirs, files in os.walk(version_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS)
        for name in files:
            path = Path(root) / name
            rel = path.relative_to(version_dir).as_posix()
            if rel == MANIFEST_NAME:
                continue
            if path.is_symlink() or not path.is_file():
                raise ManifestError(f"{path}: not a regular file (links are refused)")
            out.append(rel)
    return sorted(out)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_text(version_dir: Path) -> str:
    """The manifest ``version_dir`` should carry: ``<sha256>  <path>`` per file, sorted."""
    return "".join(f"{_sha256(version_dir / rel)}  {rel}\n" for rel in _files(version_dir))


def write_manifest(version_dir: Path) -> Path:
    """Write ``MANIFEST.sha256`` into ``version_dir`` (atomically) and return its path."""
    version_dir = Path(version_dir)
    text = manifest_text(version_dir)
    if not text:
        raise ManifestError(f"{version_dir}: no files to describe")
    target = version_dir / MANIFEST_NAME
    tmp = version_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(text)
    os.replace(tmp, target)
    return target


def read_manifest(version_dir: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from the folder's manifest; ManifestError when unusable."""
    path = Path(version_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{version_dir}: no {MANIFEST_NAME} (an incomplete export?)")
    entries: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or rel in entries or not rel:
            raise ManifestError(f"{path}:{n}: malformed line")
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ManifestError(f"{path}:{n}: path {rel!r} leaves the folder")
        entries[rel] = digest
    if not entries:
        raise ManifestError(f"{path}: empty")
    return entries


def verify_manifest(version_dir: Path) -> None:
    """Raise ManifestError unless the folder's files are exactly its manifest's, byte for byte."""
    version_dir = Path(version_dir)
    expected = read_manifest(version_dir)
    present = _files(version_dir)
    extra = sorted(set(present) - set(expected))
    missing = sorted(set(expected) - set(present))
    if extra or missing:
        raise ManifestError(f"{version_dir}: extra files {extra}, missing files {missing}")
    changed = [rel for rel in present if _sha256(version_dir / rel) != expected[rel]]
    if changed:
        raise ManifestError(f"{version_dir}: content differs from the manifest: {changed}")


def versions(model_dir: Path) -> list[int]:
    """The numeric version folders of a model, ascending."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def verify_model(model_dir: Path) -> list[int]:
    """Verify every version folder of ``model_dir``; returns the versions. ManifestError if none."""
    found = versions(model_dir)
    if not found:
        raise ManifestError(f"{model_dir}: no version folders")
    for version in found:
        verify_manifest(Path(model_dir) / str(version))
    return found


def fingerprint(model_dir: Path) -> tuple[tuple[int, str], ...]:
    """(version, manifest sha256) per version folder: what changes when a load is due."""
    out = []
    for version in versions(model_dir):
        manifest = Path(model_dir) / str(version) / MANIFEST_NAME
        out.append((version, _sha256(manifest) if manifest.is_file() else ""))
    return tuple(out)


def load_model(url: str, model: str, *, admin_key: str, timeout: float = 300.0) -> None:
    """``POST <url>/v2/repository/models/<model>/load`` with the admin header; raises on failure."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v2/repository/models/{model}/load",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json", ADMIN_HEADER: admin_key},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")[:500]
        raise ManifestError(f"loading {model} failed: HTTP {exc.code} {body}") from exc


def watch(
    *,
    model_dir: Path,
    url: str,
    model: str,
    admin_key: str,
    interval: float,
    iterations: int | None = None,
) -> None:
    """Every ``interval`` seconds: when the version folders changed and all verify, load them.

    The state at start counts as loaded (the entrypoint verified it and Triton loaded it with
    ``--load-model``). A folder that fails verification, or a load Triton refuses, is logged
    once per change and not retried; Triton keeps serving what it has. An unreachable Triton
    (starting, restarting) is retried every round.
    """
    current = fingerprint(model_dir)
    n = 0
    while iterations is None or n < iterations:
        n += 1
        time.sleep(interval)
        seen = fingerprint(model_dir)
        if seen == current:
            continue
        try:
            verify_model(model_dir)
            load_model(url, model, admin_key=admin_key)
        except ManifestError as exc:  # a bad folder or a refused load: wait for the next change
            logger.error("not loading %s: %s", model, exc)
        except OSError as exc:  # Triton not reachable (yet): try again next round
            logger.warning("loading %s: Triton unreachable (%s); retrying", model, exc)
            continue
        else:
            logger.info("loaded %s versions %s", model, [v for v, _ in seen])
        current = seen  # one attempt (and one log line) per change


def main(argv: Sequence[str] | None = None) -> int:
    """``write DIR`` | ``write-newest MODEL_DIR`` | ``verify MODEL_DIR`` | ``load``/``watch MODEL_DIR --url``."""
    parser = argparse.ArgumentParser(prog="model_manifest", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write", help="write the manifest of one version folder").add_argument("dir")
    sub.add_parser("write-newest", help="write the newest version's manifest").add_argument(
        "model_dir"
    )
    sub.add_parser("verify", help="verify every version of a model").add_argument("model_dir")
    for command, text in (
        ("watch", "verify, then load through Triton's API, on each change"),
        ("load", "verify every version, then load once through Triton's API"),
    ):
        w = sub.add_parser(command, help=text)
        w.add_argument("model_dir")
        w.add_argument("--url", required=True, help="Triton's HTTP endpoint, http://127.0.0.1:8000")
        w.add_argument("--model", default="two_tower")
        w.add_argument("--interval", type=float, default=30.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s model_manifest %(message)s")
    try:
        if args.command == "write":
            print(write_manifest(Path(args.dir)))
        elif args.command == "write-newest":
            found = versions(Path(args.model_dir))
            if not found:
                raise ManifestError(f"{args.model_dir}: no version folders")
            print(write_manifest(Path(args.model_dir) / str(found[-1])))
        elif args.command == "verify":
            found = verify_model(Path(args.model_dir))
            logger.info("%s: versions %s match their manifests", args.model_dir, found)
        else:
            key = os.environ.get(ADMIN_KEY_ENV, "")
            if not key:
                raise ManifestError(f"{ADMIN_KEY_ENV} is not set")
            if args.command == "load":
                found = verify_model(Path(args.model_dir))
                load_model(args.url, args.model, admin_key=key)
                logger.info("loaded %s versions %s", args.model, found)
                return 0
            watch(
                model_dir=Path(args.model_dir),
                url=args.url,
                model=args.model,
                admin_key=key,
                interval=args.interval,
            )
    except (ManifestError, OSError) as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
