"""The fault proxy's modes (see ``proxy.py`` for what each does on the wire) and their text forms.

``describe`` gives the short human form; ``mode_query`` writes the control API's query and
``parse_mode`` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ErrorAction = Literal["reset", "close", "grpc"]


@dataclass(frozen=True)
class Pass:
    """Forward everything."""


@dataclass(frozen=True)
class Delay:
    """Delay each upstream -> client chunk by ``ms`` milliseconds."""

    ms: float


@dataclass(frozen=True)
class Errors:
    """Fail about ``rate`` of the requests (see the module docstring for ``action``)."""

    rate: float
    action: ErrorAction = "reset"

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"error rate must be in [0, 1], got {self.rate}")


@dataclass(frozen=True)
class BlackHole:
    """Accept, read, never answer."""


@dataclass(frozen=True)
class Garbage:
    """Answer garbage: every Triton answer's scores become NaN and its ids one repeated id."""


Mode = Pass | Delay | Errors | BlackHole | Garbage


def describe(mode: Mode) -> str:
    """A short human form: ``pass``, ``delay(150ms)``, ``errors(30%, grpc)``, ``blackhole``."""
    if isinstance(mode, Delay):
        return f"delay({mode.ms:g}ms)"
    if isinstance(mode, Errors):
        return f"errors({mode.rate:.0%}, {mode.action})"
    if isinstance(mode, Garbage):
        return "garbage"
    return "blackhole" if isinstance(mode, BlackHole) else "pass"


def parse_mode(query: dict[str, str]) -> Mode:
    """A mode from control-API query parameters (``set=delay&ms=150`` ...); ValueError if bad."""
    name = query.get("set", "")
    if name == "pass":
        return Pass()
    if name == "delay":
        return Delay(float(query.get("ms", "0")))
    if name == "errors":
        action = query.get("action", "reset")
        if action not in ("reset", "close", "grpc"):
            raise ValueError(f"unknown error action {action!r}")
        return Errors(float(query.get("rate", "0")), action)  # type: ignore[arg-type]
    if name == "blackhole":
        return BlackHole()
    if name == "garbage":
        return Garbage()
    raise ValueError(f"unknown mode {name!r} (pass, delay, errors, blackhole, garbage)")


def mode_query(mode: Mode) -> str:
    """The control API query that sets ``mode``."""
    if isinstance(mode, Delay):
        return f"set=delay&ms={mode.ms:g}"
    if isinstance(mode, Errors):
        return f"set=errors&rate={mode.rate:g}&action={mode.action}"
    if isinstance(mode, Garbage):
        return "set=garbage"
    return "set=blackhole" if isinstance(mode, BlackHole) else "set=pass"
