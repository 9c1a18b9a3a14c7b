"""``cascade report online``: impressions, clicks and CTR per serving tier and model version, as
the events consumer joined them (``events.report.online_table``: impressions and clicks matched
by ``request_id`` to the answer that showed the item).

Redis unreachable (or refusing the credentials): one line on stderr naming the URL without its
password, exit code 2; never a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import typer

from cascade.runtime.paths import Layout
from cascade.runtime.redact import redact, redact_url

COLUMNS = ("tier", "model_version", "impressions", "clicks", "ctr")


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned text table (CTR as a percentage); a line when there are none."""
    if not rows:
        return "no served impressions recorded yet (POST /v1/events with request_id)"
    cells = [
        [
            str(r["tier"]),
            str(r["model_version"]),
            f"{int(r['impressions']):,}",
            f"{int(r['clicks']):,}",
            f"{float(r['ctr']):.2%}" if r.get("ctr") is not None else "-",
        ]
        for r in rows
    ]
    header = ["tier", "model version", "impressions", "clicks", "CTR"]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    left = {0, 1}

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, cells)])


def online_rows(
    *,
    redis_url: str,
    dataset: str | None = None,
    table: Callable[..., list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """The consumer's table for ``dataset``'s Feast project (most impressions first)."""
    if table is None:
        from events.report import online_table

        table = online_table
    return table(redis_url, dataset=dataset)


def default_dataset(layout: Layout) -> str:
    """$CASCADE_DATASET, else the data set the running `cascade up` serves, else demo."""
    from cascade.stack_status import SUPERVISOR, read_state, running

    if os.environ.get("CASCADE_DATASET"):
        return os.environ["CASCADE_DATASET"]
    up = (read_state(layout) or {}).get(SUPERVISOR) or {}
    if running(up) and up.get("dataset"):
        return str(up["dataset"])
    return "demo"


def report_online(
    redis_url: str = typer.Option(
        "",
        "--redis-url",
        metavar="URL",
        help="Redis of the online store (default $REDIS_URL, else the running `cascade up`'s, "
        "else redis://127.0.0.1:6379/0).",
    ),
    dataset: str = typer.Option(
        "",
        metavar="NAME",
        help="Data set whose counters to read (default $CASCADE_DATASET, else the one the "
        "running `cascade up` serves, else demo).",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON array instead of a table."),
) -> None:
    """Impressions, clicks and CTR per serving tier and model version (online metrics)."""
    import redis

    from cascade.stack_build import DEFAULT_REDIS_URL
    from cascade.stack_status import stack_redis_url

    layout = Layout.from_env()
    url = redis_url or os.environ.get("REDIS_URL") or stack_redis_url(layout) or DEFAULT_REDIS_URL
    dataset = dataset or default_dataset(layout)
    try:
        rows = online_rows(redis_url=url, dataset=dataset)
    except (redis.RedisError, OSError) as exc:
        typer.echo(
            f"error: cannot read the online metrics from Redis at {redact_url(url)}: "
            f"{redact(str(exc)) or type(exc).__name__}",
            err=True,
        )
        raise typer.Exit(code=2) from None
    if not rows and not layout.dataset_dir(dataset).is_dir():
        known = sorted(p.name for p in layout.datasets_dir.glob("*") if p.is_dir())
        typer.echo(
            f"error: no data set {dataset!r} under {layout.datasets_dir} "
            f"(known: {', '.join(known) or 'none'}); pass --dataset",
            err=True,
        )
        raise typer.Exit(code=2)
    typer.echo(f"data set {dataset!r}", err=True)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        typer.echo(format_table(rows))
