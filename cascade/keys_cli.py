"""``cascade keys create|list|revoke``: manage the gateway's API keys (thin Typer shells).

The key file is ``$GATEWAY_API_KEYS_FILE``, else ``$CASCADE_HOME/secrets/api_keys.json`` (what
``cascade up`` hands the gateway). Only hashes are stored; ``create`` prints the key once.
A running gateway picks up every change within ``GATEWAY_API_KEYS_RELOAD_S`` (no restart).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cascade.runtime.paths import Layout
from gateway.edge.keys import KEYS_FILE_ENV, ApiKeyRecord, KeyFileError, add_key, read_keys, revoke

app = typer.Typer(
    help="API keys of the gateway's client apps.", no_args_is_help=True, rich_markup_mode=None
)


def default_keys_file(layout: Layout | None = None) -> Path:
    """``$GATEWAY_API_KEYS_FILE`` or ``<CASCADE_HOME>/secrets/api_keys.json``."""
    env = os.environ.get(KEYS_FILE_ENV)
    if env:
        return Path(env)
    return (layout or Layout.from_env()).home / "secrets" / "api_keys.json"


def create_key(
    *,
    path: Path,
    client: str,
    rate: float | None = None,
    burst: int | None = None,
    pin_version: bool = False,
) -> tuple[ApiKeyRecord, str]:
    """Add a key for ``client``; returns ``(record, key)``: the key exists nowhere else."""
    return add_key(path, client=client, rate=rate, burst=burst, pin_version=pin_version)


def list_keys(*, path: Path) -> list[ApiKeyRecord]:
    """Every key in the file (active and revoked), oldest first."""
    return sorted(read_keys(path).values(), key=lambda r: (r.created_at, r.key_id))


def revoke_key(*, path: Path, key_id: str) -> ApiKeyRecord:
    """Revoke ``key_id`` (idempotent); the record stays in the file for the audit trail."""
    return revoke(path, key_id=key_id)


DEV_CLIENT = "dev"
DEV_KEY_FILE = "dev-api-key"
DEV_RATE = 100_000.0  # local load tests through `make up` should not meet the default bucket


def ensure_dev_key(*, layout: Layout, keys_file: Path | None = None) -> tuple[Path, str]:
    """A fresh development key for ``cascade up``: ``(keys file, key)``.

    Earlier ``dev`` keys are revoked (one live dev key at a time). The key is also written to
    ``<run>/dev-api-key`` (mode 0600) so local scripts can read it (``CASCADE_API_KEY``).
    """
    path = keys_file or default_keys_file(layout)
    for record in list_keys(path=path):
        if record.client == DEV_CLIENT and not record.revoked:
            revoke_key(path=path, key_id=record.key_id)
    _, key = create_key(path=path, client=DEV_CLIENT, rate=DEV_RATE, burst=int(DEV_RATE))
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    out = layout.run_dir / DEV_KEY_FILE
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return path, key


def _path(keys_file: str) -> Path:
    return Path(keys_file) if keys_file else default_keys_file()


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


_FILE_OPTION = typer.Option(
    "",
    "--keys-file",
    help=f"Key file (default ${KEYS_FILE_ENV} or $CASCADE_HOME/secrets/api_keys.json).",
)


@app.command("create")
def create(
    client: str = typer.Option(..., "--client", help="Client app name (1-64 of [A-Za-z0-9._-])."),
    rate: float = typer.Option(0.0, help="Requests/s for this key (0: the gateway's default)."),
    burst: int = typer.Option(0, help="Bucket size for this key (0: the gateway's default)."),
    pin_version: bool = typer.Option(
        False, "--pin-version", help="May pin a model version per request (debug, replay)."
    ),
    keys_file: str = _FILE_OPTION,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    path = _path(keys_file)
    try:
        record, key = create_key(
            path=path,
            client=client,
            rate=rate or None,
            burst=burst or None,
            pin_version=pin_version,
        )
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    typer.echo(key)
    typer.echo(
        f"key id {record.key_id} for client {record.client!r} stored (hash only) in {path}; "
        "this is the only time the key is shown",
        err=True,
    )


@app.command("list")
def list_command(keys_file: str = _FILE_OPTION) -> None:
    """List keys: id, client, created, revoked, rate/burst overrides. Never the keys."""
    try:
        records = list_keys(path=_path(keys_file))
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{'KEY_ID':<14}{'CLIENT':<20}{'CREATED':<22}{'REVOKED':<22}{'RATE':>8}{'BURST':>8}")
    for r in records:
        rate = f"{r.rate:g}" if r.rate is not None else "-"
        burst = str(r.burst) if r.burst is not None else "-"
        typer.echo(
            f"{r.key_id:<14}{r.client:<20}{r.created_at:<22}{r.revoked_at or '-':<22}{rate:>8}{burst:>8}"
        )


@app.command("revoke")
def revoke_command(
    key_id: str = typer.Argument(..., help="The key id (the 12 hex characters after 'csk_')."),
    keys_file: str = _FILE_OPTION,
) -> None:
    """Revoke a key; running gateways refuse it within seconds (no restart)."""
    try:
        record = revoke_key(path=_path(keys_file), key_id=key_id)
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"revoked {record.key_id} (client {record.client!r}) at {record.revoked_at}")
