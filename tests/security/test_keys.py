"""API keys: format, hashed storage, atomic writes, revocation, reload on change."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gateway.edge import keys
from gateway.edge.keys import KeyFileError, KeyRing


def test_key_format_and_id_parse() -> None:
    key_id, key = keys.generate_key()
    assert key.startswith(f"csk_{key_id}_") and len(key) == 4 + 12 + 1 + 43
    assert keys.parse_key_id(key) == key_id
    for bad in (
        "",
        "csk_",
        f"csk_{key_id}",
        f"csk_{key_id}_short",
        key + "x",
        "Bearer " + key,
        key.upper(),
    ):
        assert keys.parse_key_id(bad) is None


def test_file_stores_only_hashes_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "keys.json"
    record, key = keys.add_key(path, client="web", rate=5, burst=10)
    text = path.read_text()
    # the secret may itself contain "_": split off only the prefix and the key id
    assert key not in text and key.split("_", 2)[2] not in text
    assert record.hash == keys.hash_key(key) and record.hash in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(text)
    assert doc["format"] == keys.FILE_FORMAT
    assert doc["keys"][0] | {"hash": "-"} == {
        "key_id": record.key_id,
        "client": "web",
        "hash": "-",
        "created_at": record.created_at,
        "revoked_at": None,
        "rate": 5.0,
        "burst": 10,
    }
    assert not list(tmp_path.glob("secrets/.*.tmp"))


def test_verify_ok_mismatch_unknown_revoked(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    record, key = keys.add_key(path, client="web")
    ring = KeyRing(path)
    assert ring.verify(key) == (record, "ok")
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert ring.verify(wrong) == (None, "mismatch")
    _, other = keys.generate_key()
    assert ring.verify(other) == (None, "unknown")
    assert ring.verify("not-a-key") == (None, "malformed")
    keys.revoke(path, key_id=record.key_id)
    assert ring.reload_if_changed() is True
    assert ring.verify(key) == (None, "revoked")
    assert ring.reload_if_changed() is False  # unchanged file: no re-read


def test_reload_picks_up_new_keys_and_keeps_old_on_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    _, first = keys.add_key(path, client="a")
    ring = KeyRing(path)
    _, second = keys.add_key(path, client="b")
    assert ring.verify(second)[1] == "unknown"
    assert ring.reload_if_changed()
    assert ring.verify(second)[1] == "ok"
    path.write_text("{ not json")  # a botched hand edit: the previous keys stay in force
    assert ring.reload_if_changed() is False
    assert ring.verify(first)[1] == "ok"


def test_first_load_of_a_bad_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"format": keys.FILE_FORMAT, "keys": [{"key_id": "zz"}]}))
    with pytest.raises(KeyFileError):
        KeyRing(path)
    path.write_text(json.dumps({"keys": []}))
    with pytest.raises(KeyFileError, match="format"):
        KeyRing(path)


def test_missing_file_holds_no_keys(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "none.json")
    assert ring.records == {}
    assert ring.verify(keys.generate_key()[1]) == (None, "unknown")


def test_bad_inputs_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    for client in ("", "has space", "x" * 65, "ünï"):
        with pytest.raises(KeyFileError, match="client"):
            keys.add_key(path, client=client)
    with pytest.raises(KeyFileError, match="rate"):
        keys.add_key(path, client="ok", rate=0)
    with pytest.raises(KeyFileError, match="no key"):
        keys.revoke(path, key_id="000000000000")


def test_revoke_is_idempotent_and_kept_for_audit(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    record, _ = keys.add_key(path, client="web")
    first = keys.revoke(path, key_id=record.key_id)
    again = keys.revoke(path, key_id=record.key_id)
    assert first.revoked_at and again.revoked_at == first.revoked_at
    assert keys.read_keys(path)[record.key_id].revoked


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Several processes adding keys at once: the lock keeps every one."""
    path = tmp_path / "keys.json"
    pids = []
    for i in range(4):
        pid = os.fork()
        if pid == 0:  # child
            try:
                for j in range(5):
                    keys.add_key(path, client=f"c{i}-{j}")
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    assert len(keys.read_keys(path)) == 20
