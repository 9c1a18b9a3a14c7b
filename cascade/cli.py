"""The ``cascade`` command: a thin Typer shell over typed functions in each package.

Each command module imports its heavy libraries (torch, feast, implicit) inside the command body,
so ``cascade --help`` stays fast.
"""

from __future__ import annotations

import logging
import os

import typer
import typer.core

from cascade import keys_cli, report_online, stack, stack_status
from cascade.data import cli as data_cli
from cascade.evaluation import cli as evaluation_cli
from cascade.features import cli as features_cli
from cascade.rollout_cli import app as rollout_app
from cascade.runtime.redact import redact_root_handlers
from fallback_mf import cli as mf_cli
from two_tower import cli as two_tower_cli

# Plain help (rich_markup_mode=None): rich's boxed tables cut long option names on a narrow
# terminal and print "<bool>" after every --flag/--no-flag pair.
app = typer.Typer(
    help="Cascade: build data and features, train and evaluate models, serve recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
features_app = typer.Typer(
    help="Feast feature store: register definitions, materialize.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
train_app = typer.Typer(help="Train a model.", no_args_is_help=True, rich_markup_mode=None)
export_app = typer.Typer(
    help="Export a trained model for serving.", no_args_is_help=True, rich_markup_mode=None
)
serve_app = typer.Typer(
    help="Run one serving process in the foreground.", no_args_is_help=True, rich_markup_mode=None
)

app.add_typer(features_app, name="features")
app.add_typer(rollout_app, name="rollout")
app.add_typer(train_app, name="train")
app.add_typer(export_app, name="export")
app.add_typer(serve_app, name="serve")
app.add_typer(keys_cli.app, name="keys")
report_app = typer.Typer(
    help="Reports from the running platform.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(report_app, name="report")

app.command("data")(data_cli.data)
features_app.command("apply")(features_cli.apply)
features_app.command("materialize")(features_cli.materialize)
train_app.command("mf")(mf_cli.train_mf)
train_app.command("two-tower")(two_tower_cli.train_two_tower)
export_app.command("two-tower")(two_tower_cli.export_two_tower)
serve_app.command("triton")(two_tower_cli.serve_triton)
app.command("evaluate")(evaluation_cli.evaluate)
app.command("recommend")(evaluation_cli.recommend)
app.command("up")(stack.up_command)
app.command("status")(stack_status.status_command)
app.command("down")(stack_status.down_command)
report_app.command("online")(report_online.report_online)


@features_app.callback()
def _choose_online_store() -> None:
    """The rule `cascade up` uses, for every features command: Redis at REDIS_URL (default
    redis://127.0.0.1:6379/0) when it answers a PING, else SQLite (each command prints which)."""
    from cascade.runtime.feature_store import FeatureStoreError
    from cascade.stack_build import choose_online_store

    try:
        choose_online_store(None)
    except FeatureStoreError as exc:  # the message names the URL without its password
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


@app.callback()
def _configure(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    level = logging.DEBUG if verbose else os.environ.get("CASCADE_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:  # a line per HTTP call (cascade status) or registry refresh is noise here
        for noisy in ("httpx", "httpcore", "feast"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    redact_root_handlers()  # no credential (a REDIS_URL password) in any line the CLI logs


def name_placeholders(command: typer.core.TyperCommand | typer.core.TyperGroup) -> None:
    """``--data DATA`` instead of typer's ``--data <str>``: every value option without a
    metavar gets its own name, as argparse does (choices keep their ``<a|b>`` list)."""
    for param in command.params:
        if (
            isinstance(param, typer.core.TyperOption)
            and param.metavar is None
            and not param.is_flag
            and param.name
            and not getattr(param.type_descriptor, "choices", None)
        ):
            param.metavar = param.name.upper()
    if isinstance(command, typer.core.TyperGroup):
        for sub in command.commands.values():
            name_placeholders(sub)  # type: ignore[arg-type]


def main() -> None:
    """The ``cascade`` entry point."""
    command = typer.main.get_command(app)
    name_placeholders(command)  # type: ignore[arg-type]
    command()


if __name__ == "__main__":
    main()
