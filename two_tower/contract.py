"""The Two-Tower Triton model's wire contract: model name, tensor names, dtypes and dims.

Defined once here, by the producer; imports nothing heavy (stdlib only), so the gateway can import
it. ``triton_models/two_tower/config.pbtxt`` is generated from this module
(``two_tower.triton_config``) and a test checks that the committed file agrees.

One request row is one user. Every input has a leading batch dimension (``max_batch_size > 0``),
so a request carries ``n`` users and the shapes below are per row:

============== ====== ==================== ==================================================
name           dtype  dims (per row)       meaning
============== ====== ==================== ==================================================
user_id        INT64  [1]                  the data set's own user id (>= 0)
age_bucket     INT64  [1]                  Feast ``user_profile:age_bucket`` (-1 if missing)
country        INT64  [1]                  ``country_code(Feast user_profile:country)``
interaction_count INT64 [1]                Feast ``user_activity:interaction_count``
recent_items   INT64  [RECENT_ITEMS_LEN]   Feast ``recent_items``: newest first, repeats kept,
                                           right-padded with PAD_ITEM (-1)
seen_items     INT64  [MAX_SEEN_ITEMS]     Feast ``seen_items`` as stored: distinct, newest
                                           first, right-padded; the tower's long history, and
                                           never recommended
exclude_items  INT64  [MAX_EXCLUDE_ITEMS]  the request's ``exclude`` ids: never recommended,
                                           not history; right-padded
k              INT32  [1]                  1 <= k <= MAX_K
include_categories INT64 [MAX_FILTER_CATEGORIES]  ``category_code`` of each category the answer
                                           may hold; all PAD_CODE (-1): no include filter
exclude_categories INT64 [MAX_FILTER_CATEGORIES]  ``category_code`` of each category the answer
                                           must not hold; right-padded with PAD_CODE
============== ====== ==================== ==================================================

The category filter is applied inside the top-k, not after it: items outside the filter are
masked like seen items before the ranking, so a row still gets k items whenever k items of the
allowed categories are left. An item whose category is unknown (missing in the data set) never
matches an include filter and always passes an exclude filter. Each exported version holds its
items' codes (``item_categories.npy`` beside ``item_embeddings.npy``); a version exported before
these inputs existed ignores them, which the gateway's answer check catches (rule ``category``).

``seen_items`` and ``exclude_items`` are apart because the user tower reads ``seen_items`` in
order as the user's history (``two_tower.encoders``): ids a client asks to exclude must not
pose as the newest things the user saw. Both are masked out of the answer.

Outputs, per row, width = the largest k in the request:

* ``item_ids`` INT64: the data set's own item ids, best first, padded with PAD_ITEM (-1) after
  the row's own k, or when fewer unseen items exist.
* ``scores`` FP32: cosine scores (higher is better), padded with -inf where ``item_ids`` is -1.

``country`` travels as an INT64 code (:func:`country_code`), not as BYTES: the Python backend
stub shipped with this Triton build is compiled against numpy 1, and under numpy 2 it corrupts
every BYTES input while building the request (measured: the serialized strings arrive as a
buffer filled with their first byte, and the stub dies). Integer tensors travel by DLPack and
are unaffected. The model keeps a vocabulary of codes, so the hash never needs reversing.

Errors (a Triton error for that request; the model stays ready): wrong dtype or shape, a negative
``user_id``, an item id below -1 (in any list), a category code below -1, ``k`` outside
``[1, MAX_K]``. A ``user_id`` the model has not
seen in training is not an error: it gets the out-of-vocabulary user embedding, and its features
and recent items still personalise the result. Unknown item ids in ``recent_items`` are ignored;
unknown ids in ``seen_items`` cannot be recommended anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

MODEL_NAME = "two_tower"

# Kept equal to cascade.runtime.schema.RECENT_ITEMS_LEN / MAX_SEEN_ITEMS (a test checks it); not
# imported so that this module stays importable on its own inside any client.
RECENT_ITEMS_LEN = 20
MAX_SEEN_ITEMS = 500
PAD_ITEM = -1

MAX_EXCLUDE_ITEMS = 500  # the gateway's default max_exclude; more are cut (validation still guards)
MAX_K = 100
# Category names per filter (include, exclude); the gateway refuses more with a 422.
MAX_FILTER_CATEGORIES = 20
PAD_CODE = -1
# Rows per request (and per dynamically built batch): the gateway's batch route sends up to
# GATEWAY_BATCH_MAX_USERS (100) rows in one request.
MAX_BATCH_SIZE = 128
# Dynamic batching: how long Triton may hold a request to form a larger batch.
MAX_QUEUE_DELAY_MICROSECONDS = 500


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: name, Triton dtype, dims per row (batch dim excluded)."""

    name: str
    dtype: str  # Triton dtype without the TYPE_ prefix: INT64, INT32, FP32, BYTES
    dims: tuple[int, ...]

    @property
    def numpy_dtype(self) -> str:
        """The numpy dtype name tritonclient expects for this tensor."""
        return _NUMPY_DTYPES[self.dtype]


_NUMPY_DTYPES = {"INT64": "int64", "INT32": "int32", "FP32": "float32", "BYTES": "object"}

USER_ID = "user_id"
AGE_BUCKET = "age_bucket"
COUNTRY = "country"
INTERACTION_COUNT = "interaction_count"
RECENT_ITEMS = "recent_items"
SEEN_ITEMS = "seen_items"
EXCLUDE_ITEMS = "exclude_items"
K = "k"
INCLUDE_CATEGORIES = "include_categories"
EXCLUDE_CATEGORIES = "exclude_categories"

ITEM_IDS = "item_ids"
SCORES = "scores"

INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(USER_ID, "INT64", (1,)),
    TensorSpec(AGE_BUCKET, "INT64", (1,)),
    TensorSpec(COUNTRY, "INT64", (1,)),
    TensorSpec(INTERACTION_COUNT, "INT64", (1,)),
    TensorSpec(RECENT_ITEMS, "INT64", (RECENT_ITEMS_LEN,)),
    TensorSpec(SEEN_ITEMS, "INT64", (MAX_SEEN_ITEMS,)),
    TensorSpec(EXCLUDE_ITEMS, "INT64", (MAX_EXCLUDE_ITEMS,)),
    TensorSpec(K, "INT32", (1,)),
    TensorSpec(INCLUDE_CATEGORIES, "INT64", (MAX_FILTER_CATEGORIES,)),
    TensorSpec(EXCLUDE_CATEGORIES, "INT64", (MAX_FILTER_CATEGORIES,)),
)

OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(ITEM_IDS, "INT64", (-1,)),
    TensorSpec(SCORES, "FP32", (-1,)),
)


def pad_items(items: list[int], length: int) -> list[int]:
    """Truncate or right-pad ``items`` with PAD_ITEM to exactly ``length`` ids."""
    items = list(items[:length])
    return items + [PAD_ITEM] * (length - len(items))


def country_code(country: str | bytes | None) -> int:
    """Stable int64 code of a country string: first 8 bytes of its SHA-256, as a positive int.

    Missing or empty -> 0 (the model's "unknown" row). Surrounding whitespace is ignored.
    """
    if country is None:
        return 0
    raw = country if isinstance(country, bytes) else str(country).encode("utf-8")
    raw = raw.strip()
    if not raw:
        return 0
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF or 1


def category_code(category: str | bytes | None) -> int:
    """Stable int64 code of an item category name, by the same hash as :func:`country_code`
    (first 8 bytes of its SHA-256, positive). Names are compared exactly (case and inner
    whitespace count; surrounding whitespace does not). Missing or empty -> 0, which no filter
    code equals (filter names are non-empty), so an item without a category never matches an
    include filter."""
    return country_code(category)


def pad_codes(categories: Iterable[str], length: int = MAX_FILTER_CATEGORIES) -> list[int]:
    """The codes of ``categories`` (distinct, in order), truncated or right-padded with PAD_CODE
    to exactly ``length``."""
    codes = list(dict.fromkeys(category_code(c) for c in categories))[:length]
    return codes + [PAD_CODE] * (length - len(codes))


def ready_path(model_name: str = MODEL_NAME) -> str:
    """KServe v2 readiness path of the model (``/v2/health/ready`` answers before models load)."""
    return f"/v2/models/{model_name}/ready"


def fingerprint() -> str:
    """16 hex digits naming the wire contract (model name, every tensor's name, dtype and dims):
    written into each exported version, so a version exported for another contract is never
    served to a gateway that speaks this one (it would answer INVALID_ARGUMENT to every call)."""
    spec = [MODEL_NAME] + [f"{t.name}:{t.dtype}:{list(t.dims)}" for t in (*INPUTS, *OUTPUTS)]
    return hashlib.sha256("|".join(spec).encode()).hexdigest()[:16]
