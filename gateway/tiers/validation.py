"""Whether an upstream answer may be served: every rule, written once.

Anything a model or another process returns is untrusted input. An answer that breaks a rule
raises :class:`InvalidAnswer` (an ``UpstreamError``: the tier failed), whose ``rule`` says which
one; the chain counts it against that tier (and its breaker) and the next tier serves.

Two steps, both here:

- **decoding** (each client adapter, at the wire): the raw answer becomes a ``TierResult`` only
  when it is well formed. Triton: exactly the outputs ``two_tower.contract`` names, with its
  dtypes, and one row of exactly k entries; ``-1`` ids (with ``-inf`` scores) only as a tail of
  padding. MF: the JSON schema of ``fallback_mf.schemas``, for the user asked about.
  Both: ids and scores of equal length, ids integers in ``[0, 2**63)``, scores finite.
- **checking** (the chain, for every tier): exactly k unique items (fewer only when the
  catalogue has no more unseen items of the allowed categories), none seen or excluded, all in
  the catalogue, all inside the request's category filter, best first. A finite list out of
  order is re-sorted, not refused. The category rule is what catches a Two-Tower version
  exported before the filter existed: its model ignores the filter inputs and answers its
  unfiltered top-k, which this refuses, so the next tier serves.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Protocol

import numpy as np

from gateway.errors import UpstreamError
from gateway.tiers.types import NO_FILTER, CategoryFilter, TierResult
from two_tower import contract

MAX_ITEM_ID = 2**63 - 1


class Rule(StrEnum):
    """Which rule an answer broke (the ``rule`` label of ``gateway_invalid_answers_total``)."""

    FORMAT = "format"  # not the contract's outputs / schema: names, dtypes, shapes, JSON, user
    LENGTH = "length"  # ids and scores of different lengths
    ID = "id"  # an id that is not an integer in [0, 2**63), or padding inside the list
    SCORE = "score"  # a score that is not a finite number
    COUNT = "count"  # not exactly k items where the catalogue has k unseen ones
    DUPLICATE = "duplicate"
    SEEN = "seen"  # an item the user has interacted with or asked to exclude
    UNKNOWN = "unknown"  # an id outside the catalogue
    CATEGORY = "category"  # an item outside the request's category filter


class InvalidAnswer(UpstreamError):
    """The upstream answered, but the answer breaks ``rule``: served by no one."""

    code = "upstream_invalid"

    def __init__(self, rule: Rule, detail: str) -> None:
        super().__init__(f"{rule.value}: {detail}")
        self.rule = rule


class Catalogue(Protocol):
    """The items the models know (the popular list's snapshot)."""

    def known(self, item_ids: list[int]) -> np.ndarray: ...

    def available(self, skip: set[int], categories: CategoryFilter = NO_FILTER) -> int | None: ...

    def outside(self, item_ids: list[int], categories: CategoryFilter) -> np.ndarray: ...


# -- decoding ---------------------------------------------------------------------------------


def decode_triton(
    outputs: Mapping[str, tuple[str, Sequence[int], np.ndarray]], *, k: int, model_version: str
) -> TierResult:
    """The Two-Tower's answer for one user from its outputs: name -> (datatype, shape, array)."""
    ids, scores = _arrays(outputs, (1, k))
    return _row(ids[0], scores[0], k, model_version)


def decode_triton_rows(
    outputs: Mapping[str, tuple[str, Sequence[int], np.ndarray]],
    *,
    ks: Sequence[int],
    model_version: str,
) -> list[TierResult | InvalidAnswer]:
    """The answers of a multi-row call (row i asked for ``ks[i]`` items; the width is the
    largest k, and row i pads after its own k). Outputs that are not the contract's, or not of
    shape ``[rows, max(ks)]``, fail the whole call (raise); a row that breaks a rule is that
    row's ``InvalidAnswer``, the others stand."""
    ids, scores = _arrays(outputs, (len(ks), max(ks)))
    answers: list[TierResult | InvalidAnswer] = []
    for i, k in enumerate(ks):
        try:
            answers.append(_row(ids[i], scores[i], k, model_version))
        except InvalidAnswer as exc:
            answers.append(exc)
    return answers


def _arrays(
    outputs: Mapping[str, tuple[str, Sequence[int], np.ndarray]], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    names = sorted(spec.name for spec in contract.OUTPUTS)
    if sorted(outputs) != names:
        raise InvalidAnswer(
            Rule.FORMAT, f"outputs {sorted(outputs)} are not the contract's {names}"
        )
    arrays = {}
    for spec in contract.OUTPUTS:
        datatype, got, array = outputs[spec.name]
        if datatype != spec.dtype or array.dtype != np.dtype(spec.numpy_dtype):
            raise InvalidAnswer(
                Rule.FORMAT, f"{spec.name} is {datatype}/{array.dtype}, not {spec.dtype}"
            )
        if tuple(got) != shape or array.shape != shape:
            raise InvalidAnswer(
                Rule.FORMAT, f"{spec.name} has shape {list(got)}, not {list(shape)}"
            )
        arrays[spec.name] = array
    return arrays[contract.ITEM_IDS], arrays[contract.SCORES]


def _row(ids: np.ndarray, scores: np.ndarray, k: int, model_version: str) -> TierResult:
    """One row: its first k entries, padding (-1 with -inf) only as their tail and after."""
    if not bool((ids[k:] == contract.PAD_ITEM).all()) or not bool(np.isneginf(scores[k:]).all()):
        raise InvalidAnswer(Rule.ID, "entries after the row's k are not padding")
    ids, scores = ids[:k], scores[:k]
    pad = ids == contract.PAD_ITEM
    n = int(np.argmax(pad)) if bool(pad.any()) else k  # the first pad; all after must pad too
    if not bool(pad[n:].all()) or not bool(np.isneginf(scores[n:]).all()):
        raise InvalidAnswer(Rule.ID, "padding (-1 with -inf) is not only a tail of the row")
    return from_lists(ids[:n].tolist(), scores[:n].tolist(), model_version=model_version)


def from_lists(item_ids: list[object], scores: list[object], *, model_version: str) -> TierResult:
    """A ``TierResult`` when ids are integers in range and scores finite numbers, else raise."""
    if len(item_ids) != len(scores):
        raise InvalidAnswer(Rule.LENGTH, f"{len(item_ids)} ids but {len(scores)} scores")
    for i in item_ids:
        if type(i) is not int or not 0 <= i <= MAX_ITEM_ID:
            raise InvalidAnswer(Rule.ID, f"item id {i!r} is not an integer in [0, 2**63)")
    for s in scores:
        if type(s) not in (float, int) or not math.isfinite(s):  # type: ignore[arg-type]
            raise InvalidAnswer(Rule.SCORE, f"score {s!r} is not a finite number")
    return TierResult(
        item_ids=item_ids,  # type: ignore[arg-type]  # checked above
        scores=[float(s) for s in scores],  # type: ignore[arg-type]
        model_version=model_version,
    )


# -- checking ---------------------------------------------------------------------------------


def check_answer(
    result: TierResult,
    *,
    k: int,
    skip: set[int],
    catalogue: Catalogue,
    categories: CategoryFilter = NO_FILTER,
) -> TierResult:
    """``result`` (re-sorted best first if needed) when it follows every rule, else raise.

    ``categories``: the request's filter; every item must be inside it, and fewer than k items
    are accepted only when the allowed catalogue has no more unseen items."""
    checked = from_lists(
        list(result.item_ids), list(result.scores), model_version=result.model_version
    )
    items, scores = checked.item_ids, checked.scores
    n = len(items)
    if n != k:
        available = None
        if n < k:  # the filter is passed only when there is one (older catalogues lack it)
            available = (
                catalogue.available(skip, categories) if categories else catalogue.available(skip)
            )
        if n > k or available is None or n != min(k, available):
            raise InvalidAnswer(Rule.COUNT, f"{n} items for k={k}")
    if len(set(items)) != n:
        raise InvalidAnswer(Rule.DUPLICATE, "an item appears twice")
    if skip.intersection(items):
        raise InvalidAnswer(Rule.SEEN, "an item the user has seen or excluded")
    if not bool(catalogue.known(items).all()):
        raise InvalidAnswer(Rule.UNKNOWN, "an item id outside the catalogue")
    if categories and bool(catalogue.outside(items, categories).any()):
        raise InvalidAnswer(Rule.CATEGORY, "an item outside the request's category filter")
    if any(a < b for a, b in itertools.pairwise(scores)):
        order = sorted(range(n), key=lambda i: -scores[i])
        return TierResult(
            item_ids=[items[i] for i in order],
            scores=[scores[i] for i in order],
            model_version=result.model_version,
        )
    return checked
