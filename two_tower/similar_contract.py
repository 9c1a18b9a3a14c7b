"""Wire contract of the ``two_tower_similar`` Triton model: the items nearest to one item.

Defined once here, by the producer; stdlib only, so the gateway can import it.
``triton_models/two_tower_similar/config.pbtxt`` (and ``configs/gpu.pbtxt``) are generated from
this module (``two_tower.similar_export``) and a test checks that the committed files agree.

The model serves the Two-Tower's item embeddings (the ``item_embeddings.npy`` / ``item_ids.npy``
that ``cascade export two-tower`` writes into ``two_tower/<N>/``; ``two_tower_similar/<N>/`` holds
the same files for the same version N): exact top-k over the whole catalogue by cosine, the dot
product of the L2-normalised item vectors. One request row is one query item; every input has a
leading batch dimension (``max_batch_size > 0``), the shapes below are per row:

============== ====== =================== ==================================================
name           dtype  dims (per row)      meaning
============== ====== =================== ==================================================
item_id        INT64  [1]                 the data set's own item id (>= 0) to find neighbours of
k              INT32  [1]                 1 <= k <= MAX_K
exclude_items  INT64  [MAX_EXCLUDE_ITEMS] optional: ids never to return, right-padded with
                                          PAD_ITEM (-1)
============== ====== =================== ==================================================

Outputs, per row, width = the largest k in the request:

* ``item_ids`` INT64: the nearest items, best first, never the query item itself; padded with
  PAD_ITEM (-1) after the row's own k, or when the catalogue has fewer other items.
* ``scores`` FP32: cosine similarity in [-1, 1] (higher is more similar); -inf where
  ``item_ids`` is -1.

Errors (a Triton error for that request, code INVALID_ARG; the model stays ready): wrong dtype or
shape, a negative ``item_id``, an exclude id below -1, ``k`` outside ``[1, MAX_K]``, and an
``item_id`` the model does not know, whose message starts with :data:`UNKNOWN_ITEM_MESSAGE`
(the gateway reads that as "this model does not know the item", not as a failure).
"""

from __future__ import annotations

import hashlib

from two_tower.contract import PAD_ITEM, TensorSpec

MODEL_NAME = "two_tower_similar"

MAX_K = 100
MAX_EXCLUDE_ITEMS = 100
MAX_BATCH_SIZE = 64
MAX_QUEUE_DELAY_MICROSECONDS = 500

# The first words of the error a request for an item outside the model's catalogue gets.
# triton_models/two_tower_similar/model.py spells the same text (it cannot import this module;
# a test checks they agree).
UNKNOWN_ITEM_MESSAGE = "unknown item_id"

ITEM_ID = "item_id"
K = "k"
EXCLUDE_ITEMS = "exclude_items"
ITEM_IDS = "item_ids"
SCORES = "scores"

INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(ITEM_ID, "INT64", (1,)),
    TensorSpec(K, "INT32", (1,)),
    TensorSpec(EXCLUDE_ITEMS, "INT64", (MAX_EXCLUDE_ITEMS,)),
)
OPTIONAL_INPUTS = frozenset({EXCLUDE_ITEMS})

OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(ITEM_IDS, "INT64", (-1,)),
    TensorSpec(SCORES, "FP32", (-1,)),
)

__all__ = [
    "EXCLUDE_ITEMS",
    "INPUTS",
    "ITEM_ID",
    "ITEM_IDS",
    "MAX_BATCH_SIZE",
    "MAX_EXCLUDE_ITEMS",
    "MAX_K",
    "MODEL_NAME",
    "OPTIONAL_INPUTS",
    "OUTPUTS",
    "PAD_ITEM",
    "SCORES",
    "UNKNOWN_ITEM_MESSAGE",
    "K",
    "TensorSpec",
    "fingerprint",
    "ready_path",
]


def ready_path(model_name: str = MODEL_NAME) -> str:
    """KServe v2 readiness path of the model."""
    return f"/v2/models/{model_name}/ready"


def fingerprint() -> str:
    """16 hex digits naming this wire contract (model name, every tensor's name, dtype, dims and
    whether it is optional): written into each exported version's ``metadata.json``."""
    spec = [MODEL_NAME] + [
        f"{t.name}:{t.dtype}:{list(t.dims)}:{t.name in OPTIONAL_INPUTS}"
        for t in (*INPUTS, *OUTPUTS)
    ]
    return hashlib.sha256("|".join(spec).encode()).hexdigest()[:16]
