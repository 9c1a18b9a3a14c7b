"""Triton Python-backend model: Two-Tower user tower, then exact top-k over all items.

SOURCE TEMPLATE. ``cascade export two-tower`` copies this file into each version folder
(``triton_models/two_tower/<N>/model.py``) next to the weights it loads:

    user_tower.pt         TorchScript user tower (raw ids and features in, unit vector out)
    item_embeddings.npy   float32 (n_items, dim), L2-normalised, row order = item_ids.npy
    item_ids.npy          int64, sorted: the data set's own item ids
    item_bias.npy         float32, row order = item_ids.npy, optional: the recent-popularity
                          prior added to every score before masking (two_tower.item_prior)
    item_neighbours.pt    TorchScript, optional: the item-neighbour term (two_tower.item_neighbours),
                          raw seen_items in, (rows, n_items) float32 added before masking
    item_categories.npy   int64, row order = item_ids.npy: each item's category code
                          (``contract.category_code``; 0 = unknown); absent in versions exported
                          before the category filter, which then refuse a filtered request
    metadata.json         limits (max_k, list lengths), versions

Self-contained on purpose: the production Triton image has torch and numpy but not the
``cascade`` / ``two_tower`` packages, so nothing here imports them. The wire contract is
``two_tower/contract.py``; the limits it needs come from ``metadata.json``.

Tensors move between Triton and torch by DLPack (``to_dlpack`` / ``Tensor.from_dlpack``): with
numpy 2, ``as_numpy()`` plus ``pb_utils.Tensor(name, ndarray)`` returns wrong output shapes, and
on ``KIND_GPU`` DLPack keeps the tensors on the GPU without copies. Every input is an integer
tensor (the country travels as its int64 code): this stub corrupts BYTES inputs under numpy 2.

The category filter (``include_categories`` / ``exclude_categories``, codes right-padded with
-1) masks the items outside it before the top-k, like seen items: a filtered row still gets k
items whenever k allowed items are left. Codes are looked up in the version's own vocabulary of
category codes, so the mask costs one (rows x categories) table and one gather per batch, and
nothing at all for a batch without filters.

The data set a version was trained on (``metadata.json`` ``data``: name and checksum) is checked
against the request parameter ``cascade_dataset`` (``<name>:<checksum, 12 hex>``) when the
gateway sends one (``GATEWAY_DATASET_ID``): a version trained on another data set answers that
request with an error naming both, so a gateway serving demo never serves a tiny model's items.

Dynamic batching hands ``execute`` several requests: the valid ones are scored together in one
user-tower call and one matrix product; an invalid request gets its own error response and the
others are unaffected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack

NEG_INF = float("-inf")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def _keep_freed_memory(limit: int = 1 << 30) -> None:
    """glibc returns every block above its mmap threshold (at most 32 MiB) to the kernel on
    free, so each batch's multi-megabyte tensors (scores over the catalogue, the padded seen
    set) cost fresh page faults; keep them in the heap instead (two_tower/allocator.py says
    more; this file imports nothing from that package)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, limit)
        libc.mallopt(M_TRIM_THRESHOLD, limit)
    except (OSError, AttributeError):  # another C library: keep its allocator as it is
        pass


class BadRequest(ValueError):
    """A request the model refuses; its message goes back to the client as a Triton error."""


def _lookup(vocab: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Index 1..n of each id in the sorted ``vocab``; 0 for ids not in it (padding included)."""
    pos = torch.searchsorted(vocab, ids).clamp(max=vocab.numel() - 1)
    return torch.where(vocab[pos] == ids, pos + 1, torch.zeros_like(pos))


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """Rows of several requests as one tensor; 2-D parts of different widths (category
    filters padded to different lengths) are right-padded with -1 to the widest."""
    if parts[0].dim() == 2:
        width = max(p.shape[1] for p in parts)
        parts = [torch.nn.functional.pad(p, (0, width - p.shape[1]), value=-1) for p in parts]
    return torch.cat(parts)


def _invalid_arg(message: str | None) -> Any:
    """A Triton error with code INVALID_ARG (HTTP 400) where this backend supports codes."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    if code is None:
        return pb_utils.TritonError(message)
    return pb_utils.TritonError(message, code)


class TritonPythonModel:
    """Triton's entry point for the Python backend."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        if args.get("model_instance_kind") == "GPU":
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
        else:
            self.device = torch.device("cpu")
            torch.set_num_threads(int(params.get("torch_num_threads") or 1))
            _keep_freed_memory()
        with open(os.path.join(folder, "metadata.json")) as f:
            meta = json.load(f)
        self.max_k = int(meta["max_k"])
        self.tower = torch.jit.load(
            os.path.join(folder, "user_tower.pt"), map_location=self.device
        ).eval()
        items = np.load(os.path.join(folder, "item_ids.npy"), allow_pickle=False)
        emb = np.load(os.path.join(folder, "item_embeddings.npy"), allow_pickle=False)
        self.item_ids = torch.from_numpy(items.astype(np.int64)).to(self.device)
        self.item_emb_t = torch.from_numpy(np.ascontiguousarray(emb.T, dtype=np.float32)).to(
            self.device
        )
        self.version = meta.get("artifact_version", "?")
        self.model_version = args["model_version"]
        data = meta.get("data") or {}
        checksum = str(data.get("checksum") or "")
        self.dataset = f"{data.get('dataset')}:{checksum[:12]}" if checksum else ""
        self._load_categories(folder, len(items))
        self.item_bias = self._load_bias(folder, len(items))
        self.neighbour_term = self._load_neighbour_term(folder, len(items))
        self._warm_up(
            int(meta["recent_items_len"]),
            int(meta["max_seen_items"]),
            int(meta.get("max_exclude_items", 1)),
        )
        pb_utils.Logger.log_info(
            f"two_tower version {args['model_version']} (artifact {self.version}): "
            f"{len(items)} items, device {self.device}"
        )

    def _load_bias(self, folder: str, n_items: int) -> torch.Tensor | None:
        """The recent-popularity prior added to every score (absent: none), checked finite."""
        path = os.path.join(folder, "item_bias.npy")
        if not os.path.isfile(path):
            return None
        bias = np.load(path, allow_pickle=False).astype(np.float32)
        if bias.shape != (n_items,) or not np.isfinite(bias).all():
            raise ValueError(f"item_bias.npy is not one finite float per item ({bias.shape})")
        return torch.from_numpy(bias).to(self.device)

    def _load_neighbour_term(self, folder: str, n_items: int) -> Any:
        """The item-neighbour term (absent: none), checked to give one finite score per item."""
        path = os.path.join(folder, "item_neighbours.pt")
        if not os.path.isfile(path):
            return None
        term = torch.jit.load(path, map_location=self.device).eval()
        probe = term(torch.full((1, 4), -1, dtype=torch.int64, device=self.device))
        if tuple(probe.shape) != (1, n_items) or not bool(torch.isfinite(probe).all()):
            raise ValueError(f"item_neighbours.pt gives {tuple(probe.shape)}, not (1, {n_items})")
        return term

    def _load_categories(self, folder: str, n_items: int) -> None:
        """Each item's category as an index into this version's sorted category codes."""
        path = os.path.join(folder, "item_categories.npy")
        self.has_categories = os.path.isfile(path)
        codes = (
            np.load(path, allow_pickle=False).astype(np.int64)
            if self.has_categories
            else np.zeros(n_items, dtype=np.int64)
        )
        if codes.shape != (n_items,):
            raise ValueError(f"item_categories.npy has shape {codes.shape}, not ({n_items},)")
        vocab, index = np.unique(codes, return_inverse=True)
        self.category_vocab = torch.from_numpy(vocab).to(self.device)
        self.item_category = torch.from_numpy(index.astype(np.int64)).to(self.device)

    def _category_mask(self, include: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor | None:
        """``(n, n_items)`` True where an item is outside its row's filter; None: no filter."""
        has_include = (include >= 0).any(dim=1)
        has_exclude = (exclude >= 0).any(dim=1)
        if not bool(has_include.any()) and not bool(has_exclude.any()):
            return None
        n, n_codes = include.shape[0], self.category_vocab.numel()

        def table(codes: torch.Tensor) -> torch.Tensor:
            # (n, n_codes + 1): column 1 + j is True when the row names vocabulary code j;
            # column 0 collects codes this version has no item of (and the padding).
            out = torch.zeros((n, n_codes + 1), dtype=torch.bool, device=self.device)
            out.scatter_(1, _lookup(self.category_vocab, codes), True)
            return out[:, 1:]

        allowed = torch.ones((n, n_codes), dtype=torch.bool, device=self.device)
        allowed = torch.where(has_include.unsqueeze(1), table(include), allowed)
        allowed &= ~table(exclude)
        return ~allowed[:, self.item_category]

    def _warm_up(self, recent_len: int, seen_len: int, exclude_len: int, rounds: int = 3) -> None:
        """A few calls on a padding-only row before Triton reports the model ready: TorchScript's
        profiling executor makes the first calls slow (the first request after a start timed out
        at the gateway's 100 ms and was served by ALS)."""
        zeros = torch.zeros(1, dtype=torch.int64, device=self.device)
        row = {
            "user_id": zeros,
            "age_bucket": zeros - 1,
            "country": zeros,
            "interaction_count": zeros,
            "recent_items": torch.full((1, recent_len), -1, dtype=torch.int64, device=self.device),
            "seen_items": torch.full((1, seen_len), -1, dtype=torch.int64, device=self.device),
            "exclude_items": torch.full(
                (1, exclude_len), -1, dtype=torch.int64, device=self.device
            ),
            "k": torch.ones(1, dtype=torch.int64, device=self.device),
            "include_categories": torch.full((1, 1), -1, dtype=torch.int64, device=self.device),
            "exclude_categories": torch.full((1, 1), -1, dtype=torch.int64, device=self.device),
        }
        for _ in range(rounds):
            self._top_k(row)

    # -- inputs -------------------------------------------------------------------------------

    def _int_input(self, request: Any, name: str) -> torch.Tensor:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise BadRequest(f"missing input '{name}'")
        return from_dlpack(tensor.to_dlpack()).to(self.device)

    def _check_dataset(self, request: Any) -> None:
        """Refuse a request for another data set than this version's (see the docstring)."""
        try:
            params = json.loads(request.parameters() or "{}")
        except (AttributeError, ValueError):  # a stub without request parameters: no check
            return
        want = params.get("cascade_dataset") if isinstance(params, dict) else None
        if want and self.dataset and want != self.dataset:
            raise BadRequest(
                f"two_tower version {self.model_version} was trained on data set "
                f"{self.dataset}, not {want}: export a Two-Tower trained on {want}"
            )

    def _parse(self, request: Any) -> dict[str, torch.Tensor]:
        user_id = self._int_input(request, "user_id").reshape(-1)
        n = user_id.shape[0]
        k = self._int_input(request, "k").reshape(-1).to(torch.int64)
        if bool((user_id < 0).any()):
            bad = int(user_id[user_id < 0][0])
            raise BadRequest(f"invalid user_id {bad}: ids are >= 0")
        if bool(((k < 1) | (k > self.max_k)).any()):
            bad = int(k[(k < 1) | (k > self.max_k)][0])
            raise BadRequest(f"k={bad} out of range: 1 <= k <= {self.max_k}")
        recent = self._int_input(request, "recent_items")
        seen = self._int_input(request, "seen_items")
        exclude = self._int_input(request, "exclude_items")
        for name, items in (
            ("recent_items", recent),
            ("seen_items", seen),
            ("exclude_items", exclude),
        ):
            if bool((items < -1).any()):
                raise BadRequest(f"invalid item id in {name}: ids are >= 0, -1 pads")
        include = self._codes(request, "include_categories", n)
        exclude_categories = self._codes(request, "exclude_categories", n)
        if not self.has_categories and bool(
            (include >= 0).any() or (exclude_categories >= 0).any()
        ):
            raise BadRequest(
                "this version was exported without item categories: it cannot apply a "
                "category filter (export a newly trained artifact)"
            )
        return {
            "user_id": user_id,
            "age_bucket": self._int_input(request, "age_bucket").reshape(n),
            "country": self._int_input(request, "country").reshape(n),
            "interaction_count": self._int_input(request, "interaction_count").reshape(n),
            "recent_items": recent.reshape(n, -1),
            "seen_items": seen.reshape(n, -1),
            "exclude_items": exclude.reshape(n, -1),
            "k": k,
            "include_categories": include,
            "exclude_categories": exclude_categories,
        }

    def _codes(self, request: Any, name: str, n: int) -> torch.Tensor:
        """A category filter input as ``(n, width)``; absent (a config without the filter
        inputs): no filter."""
        if pb_utils.get_input_tensor_by_name(request, name) is None:
            return torch.full((n, 1), -1, dtype=torch.int64, device=self.device)
        codes = self._int_input(request, name).reshape(n, -1)
        if bool((codes < -1).any()):
            raise BadRequest(f"invalid category code in {name}: codes are >= 0, -1 pads")
        return codes

    # -- scoring ------------------------------------------------------------------------------

    def _top_k(self, rows: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ids and scores, width = the largest k; -1 / -inf after each row's own k."""
        with torch.inference_mode():
            users = self.tower(
                rows["user_id"],
                rows["age_bucket"],
                rows["country"],
                rows["interaction_count"],
                rows["recent_items"],
                rows["seen_items"],
            )
            scores = users @ self.item_emb_t
            if self.item_bias is not None:
                scores += self.item_bias
            if self.neighbour_term is not None:
                scores += self.neighbour_term(rows["seen_items"])
            n, n_items = scores.shape
            mask = torch.zeros((n, n_items + 1), dtype=torch.bool, device=self.device)
            mask.scatter_(1, _lookup(self.item_ids, rows["seen_items"]), True)
            mask.scatter_(1, _lookup(self.item_ids, rows["exclude_items"]), True)
            scores.masked_fill_(mask[:, 1:], NEG_INF)
            outside = self._category_mask(rows["include_categories"], rows["exclude_categories"])
            if outside is not None:
                scores.masked_fill_(outside, NEG_INF)
            width = int(rows["k"].max())
            top = min(width, n_items)
            values, index = torch.topk(scores, top, dim=1)
            ids = self.item_ids[index]
            if top < width:
                ids = torch.nn.functional.pad(ids, (0, width - top), value=-1)
                values = torch.nn.functional.pad(values, (0, width - top), value=NEG_INF)
            cut = torch.arange(width, device=self.device).unsqueeze(0) >= rows["k"].unsqueeze(1)
            cut |= torch.isinf(values)
            ids = ids.masked_fill(cut, -1)
            values = values.masked_fill(cut, NEG_INF)
        return ids.contiguous(), values.contiguous()

    def execute(self, requests: list[Any]) -> list[Any]:
        parsed: list[dict[str, torch.Tensor] | None] = []
        errors: list[str | None] = []
        for request in requests:
            try:
                self._check_dataset(request)
                parsed.append(self._parse(request))
                errors.append(None)
            except BadRequest as exc:
                parsed.append(None)
                errors.append(str(exc))
        good = [p for p in parsed if p is not None]
        results: list[tuple[torch.Tensor, torch.Tensor]] = []
        if good:
            keys = good[0].keys()
            merged = {key: _cat([p[key] for p in good]) for key in keys}
            ids, values = self._top_k(merged)
            start = 0
            for p in good:
                n, width = p["user_id"].shape[0], int(p["k"].max())
                results.append((ids[start : start + n, :width], values[start : start + n, :width]))
                start += n
        responses = []
        it = iter(results)
        for p, err in zip(parsed, errors, strict=True):
            if p is None:
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[], error=_invalid_arg(err))
                )
                continue
            ids, values = next(it)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor.from_dlpack("item_ids", to_dlpack(ids.contiguous())),
                        pb_utils.Tensor.from_dlpack("scores", to_dlpack(values.contiguous())),
                    ]
                )
            )
        return responses

    def finalize(self) -> None:
        pb_utils.Logger.log_info(f"two_tower artifact {self.version} unloaded")
