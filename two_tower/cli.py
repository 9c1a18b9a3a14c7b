"""Typer commands for the Two-Tower model: ``cascade train two-tower``, ``export two-tower``,
``serve triton``. Thin shells; heavy imports (torch) live inside the command bodies."""

from __future__ import annotations

import typer


def train_two_tower() -> None:
    """Train the Two-Tower model (work in progress)."""
    raise typer.Exit(code=2)


def export_two_tower() -> None:
    """Export the trained Two-Tower model to triton_models/ (work in progress)."""
    raise typer.Exit(code=2)


def serve_triton() -> None:
    """Run tritonserver on triton_models/ in the foreground (work in progress)."""
    raise typer.Exit(code=2)
