"""API keys for client apps: the key format, the hashed key file, and the in-memory key ring.

A key is ``csk_<key_id>_<secret>``: ``key_id`` is 12 hex characters (public: it names the key in
logs, traces, metrics and the CLI), ``secret`` is 43 url-safe base64 characters (256 random bits).
The id is parsed from the key itself, so a request costs one dict lookup and one constant-time
comparison, never a scan.

Only ``sha256(key)`` is stored. A slow hash (scrypt, argon2) protects low-entropy passwords; a
256-bit random secret cannot be brute-forced from its SHA-256, and a slow hash would cost
milliseconds of CPU per request on the serving path.

The key file (JSON, mode 0600, written atomically under a lock)::

    {"format": "cascade-api-keys/1",
     "keys": [{"key_id": "3f9c0a1b2c4d", "client": "web", "hash": "sha256:<hex>",
               "created_at": "2026-11-29T17:00:00Z", "revoked_at": null,
               "rate": null, "burst": null}]}

``rate`` / ``burst`` override the gateway's default token bucket for that key. The gateway's
:class:`KeyRing` re-reads the file when its mtime, size or inode changes (checked at most every
``check_interval_s``, off the event loop), so revocation and new keys need no restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

KEY_PREFIX = "csk"
FILE_FORMAT = "cascade-api-keys/1"
KEYS_FILE_ENV = "GATEWAY_API_KEYS_FILE"
_KEY_RE = re.compile(r"csk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_KEY_ID_RE = re.compile(r"[0-9a-f]{12}")
_CLIENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Compared against when the key id is unknown, so both paths cost one hash and one comparison.
_DUMMY_HASH = "sha256:" + "0" * 64


class KeyFileError(ValueError):
    """The key file is missing, unreadable or malformed, or a key operation is invalid."""


@dataclass(frozen=True)
class ApiKeyRecord:
    """One stored key: never the key itself, only its hash."""

    key_id: str
    client: str
    hash: str
    created_at: str
    revoked_at: str | None = None
    rate: float | None = None
    burst: int | None = None
    pin_version: bool = False  # may pin a model version per request (debugging, replay)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hash_key(key: str) -> str:
    """``sha256:<hex>`` of the whole key string."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new ``(key_id, key)``."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def parse_key_id(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = _KEY_RE.fullmatch(key)
    return match.group(1) if match else None


def valid_client(name: str) -> bool:
    """Client names: 1-64 characters of ``[A-Za-z0-9._-]`` (they become metric labels)."""
    return bool(_CLIENT_RE.fullmatch(name))


def _record(raw: dict[str, Any]) -> ApiKeyRecord:
    try:
        rec = ApiKeyRecord(
            key_id=str(raw["key_id"]),
            client=str(raw["client"]),
            hash=str(raw["hash"]),
            created_at=str(raw["created_at"]),
            revoked_at=None if raw.get("revoked_at") is None else str(raw["revoked_at"]),
            rate=None if raw.get("rate") is None else float(raw["rate"]),
            burst=None if raw.get("burst") is None else int(raw["burst"]),
            pin_version=raw.get("pin_version", False) is True,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"bad key entry {raw!r:.120}: {exc!r}") from exc
    if (
        not _KEY_ID_RE.fullmatch(rec.key_id)
        or not rec.hash.startswith("sha256:")
        or not valid_client(rec.client)
    ):
        raise KeyFileError(f"bad key entry for key id {rec.key_id!r:.20}")
    if (rec.rate is not None and rec.rate <= 0) or (rec.burst is not None and rec.burst < 1):
        raise KeyFileError(f"key {rec.key_id}: rate must be > 0 and burst >= 1")
    return rec


def read_keys(path: Path) -> dict[str, ApiKeyRecord]:
    """All records of a key file, by key id (a missing file holds no keys)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"key file {path} is not JSON: {exc}") from exc
    if (
        not isinstance(doc, dict)
        or doc.get("format") != FILE_FORMAT
        or not isinstance(doc.get("keys"), list)
    ):
        raise KeyFileError(
            f"key file {path}: expected {{'format': {FILE_FORMAT!r}, 'keys': [...]}}"
        )
    records = [_record(k) for k in doc["keys"]]
    by_id = {r.key_id: r for r in records}
    if len(by_id) != len(records):
        raise KeyFileError(f"key file {path}: duplicate key ids")
    return by_id


def write_keys(path: Path, records: dict[str, ApiKeyRecord]) -> None:
    """Replace the key file atomically (temp file + rename), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # pin_version only where set: files without pinning keys stay as older gateways wrote them
    entries = [
        {k: v for k, v in asdict(r).items() if k != "pin_version" or v} for r in records.values()
    ]
    doc = {"format": FILE_FORMAT, "keys": entries}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(doc, out, indent=2)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock for a read-modify-write of ``path`` (a sibling ``.lock`` file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def add_key(
    path: Path,
    *,
    client: str,
    rate: float | None = None,
    burst: int | None = None,
    pin_version: bool = False,
) -> tuple[ApiKeyRecord, str]:
    """Create a key for ``client``; returns the record and the key (shown once, never stored)."""
    if not valid_client(client):
        raise KeyFileError(f"client name {client!r}: use 1-64 characters of [A-Za-z0-9._-]")
    if (rate is not None and rate <= 0) or (burst is not None and burst < 1):
        raise KeyFileError("rate must be > 0 and burst >= 1")
    with locked(path):
        records = read_keys(path)
        key_id, key = generate_key()
        while (
            key_id in records
        ):  # 48-bit ids: a clash is astronomically rare, but cheap to rule out
            key_id, key = generate_key()
        record = ApiKeyRecord(
            key_id=key_id,
            client=client,
            hash=hash_key(key),
            created_at=now_iso(),
            rate=rate,
            burst=burst,
            pin_version=pin_version,
        )
        records[key_id] = record
        write_keys(path, records)
    return record, key


def revoke(path: Path, *, key_id: str) -> ApiKeyRecord:
    """Mark ``key_id`` revoked (kept in the file for the audit trail); idempotent."""
    with locked(path):
        records = read_keys(path)
        if key_id not in records:
            raise KeyFileError(f"no key with id {key_id!r} in {path}")
        record = records[key_id]
        if not record.revoked:
            record = replace(record, revoked_at=now_iso())
            records[key_id] = record
            write_keys(path, records)
    return record


class KeyRing:
    """The gateway's view of the key file, swapped whole on reload (readers never see half)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, ApiKeyRecord] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self.reload_failures = 0  # reloads that kept the previous keys (a bad file)
        self.failing = False  # the file on disk is not the one in force (last reload failed)
        self.reload_if_changed(force=True)

    @property
    def records(self) -> dict[str, ApiKeyRecord]:
        return self._records

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """Re-read the file when its (mtime, size, inode) changed; True when it was reloaded.

        Blocking (stat + read): the gateway calls it from a worker thread. A malformed file is
        logged and the previous keys are kept (the CLI writes atomically, so this means a hand
        edit went wrong); the first load raises instead, so a bad file stops startup.
        """
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except FileNotFoundError:
                stamp = (0, 0, 0)
            if stamp == self._stamp and not force:
                return False
            try:
                records = read_keys(self.path)
            except KeyFileError:
                if self._stamp is None:
                    raise
                logger.error(
                    "key file %s is invalid; keeping the previous keys", self.path, exc_info=True
                )
                self._stamp = stamp
                self.reload_failures += 1
                self.failing = True
                return False
            self._records = records
            self._stamp = stamp
            self.failing = False
        active = sum(1 for r in records.values() if not r.revoked)
        logger.info(
            "api keys loaded from %s: %d active, %d revoked",
            self.path,
            active,
            len(records) - active,
        )
        return True

    def verify(self, key: str) -> tuple[ApiKeyRecord | None, str]:
        """``(record, "ok")`` for a valid active key, else ``(None, reason)``.

        The reason (``malformed``, ``unknown``, ``mismatch``, ``revoked``) is for metrics and
        server logs only; clients get one generic answer whatever it is.
        """
        key_id = parse_key_id(key)
        if key_id is None:
            return None, "malformed"
        record = self._records.get(key_id)
        presented = hash_key(key)
        if (
            not hmac.compare_digest(presented, record.hash if record else _DUMMY_HASH)
            or record is None
        ):
            return None, "unknown" if record is None else "mismatch"
        if record.revoked:
            return None, "revoked"
        return record, "ok"
