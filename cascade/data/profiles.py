"""The synthetic generator's profiles, by name only (no numpy), so a CLI can offer them cheaply."""

from __future__ import annotations

from enum import StrEnum


class Profile(StrEnum):
    """How the synthetic generator draws interactions (users and items are the same for both)."""

    SESSIONS = "sessions"  # sessions and bursts, item-to-item transitions, popularity drift
    UNIFORM = "uniform"  # independent draws at uniform times: the generator before profiles


DEFAULT_PROFILE = Profile.SESSIONS


def parse_profile(value: str | Profile) -> Profile:
    """``value`` as a Profile; ValueError naming the choices when it is not one."""
    try:
        return Profile(value)
    except ValueError:
        choices = ", ".join(p.value for p in Profile)
        raise ValueError(f"unknown profile {value!r}; choose one of {choices}") from None
