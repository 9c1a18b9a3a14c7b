"""``cascade keys``: the typed functions and the Typer shell (prints the key once, exit 2 on bad input)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade import keys_cli
from gateway.edge.keys import KeyRing, hash_key


def test_functions_create_list_revoke(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    record, key = keys_cli.create_key(path=path, client="web", rate=50, burst=100)
    assert [r.key_id for r in keys_cli.list_keys(path=path)] == [record.key_id]
    assert KeyRing(path).verify(key)[1] == "ok"
    revoked = keys_cli.revoke_key(path=path, key_id=record.key_id)
    assert revoked.revoked and KeyRing(path).verify(key)[1] == "revoked"


def test_default_file_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_API_KEYS_FILE", raising=False)
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    assert keys_cli.default_keys_file() == tmp_path.resolve() / "secrets" / "api_keys.json"
    monkeypatch.setenv("GATEWAY_API_KEYS_FILE", str(tmp_path / "x.json"))
    assert keys_cli.default_keys_file() == tmp_path / "x.json"


def test_cli_shell(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "k.json"
    created = runner.invoke(
        keys_cli.app, ["create", "--client", "mobile", "--rate", "5", "--keys-file", str(path)]
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert (
        key.startswith("csk_") and hash_key(key) in path.read_text() and key not in path.read_text()
    )
    key_id = key.split("_")[1]
    listed = runner.invoke(keys_cli.app, ["list", "--keys-file", str(path)])
    assert listed.exit_code == 0 and key_id in listed.stdout and "mobile" in listed.stdout
    assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    revoked = runner.invoke(keys_cli.app, ["revoke", key_id, "--keys-file", str(path)])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    listed = runner.invoke(keys_cli.app, ["list", "--keys-file", str(path)])
    assert "Z" in listed.stdout.splitlines()[1].split()[3]  # a revocation timestamp


@pytest.mark.parametrize(
    "args",
    [
        ["create", "--client", "bad name"],
        ["revoke", "000000000000"],
        ["create", "--client", "x", "--rate", "-1"],
    ],
)
def test_cli_bad_input_exits_2_without_traceback(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(keys_cli.app, [*args, "--keys-file", str(tmp_path / "k.json")])
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr and "Traceback" not in result.output


def test_cli_corrupt_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text("nope")
    result = CliRunner().invoke(keys_cli.app, ["list", "--keys-file", str(path)])
    assert result.exit_code == 2 and "not JSON" in result.stderr


def test_dev_key_for_cascade_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cascade.runtime.paths import Layout

    monkeypatch.delenv("GATEWAY_API_KEYS_FILE", raising=False)
    layout = Layout(home=tmp_path)
    path, first = keys_cli.ensure_dev_key(layout=layout)
    assert path == tmp_path / "secrets" / "api_keys.json"
    saved = tmp_path / "run" / "dev-api-key"
    assert saved.read_text().strip() == first and oct(saved.stat().st_mode & 0o777) == "0o600"
    _, second = keys_cli.ensure_dev_key(layout=layout)  # the next `cascade up`
    ring = KeyRing(path)
    assert ring.verify(first)[1] == "revoked" and ring.verify(second)[1] == "ok"
    assert saved.read_text().strip() == second
