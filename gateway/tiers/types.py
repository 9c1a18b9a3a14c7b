"""Shared types of the tiers: a user's online features and one tier's answer."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class UserFeatures:
    """A user's online features (Feast ``user_profile`` + ``user_activity``)."""

    user_id: int
    age_bucket: int = -1
    country: str = ""
    interaction_count: int = 0
    recent_items: tuple[int, ...] = ()
    seen_items: tuple[int, ...] = ()


@dataclass(frozen=True)
class TierResult:
    """Items best first with their scores, and the version of the model that produced them."""

    item_ids: list[int]
    scores: list[float]
    model_version: str
    extra: dict[str, str] = field(default_factory=dict)
