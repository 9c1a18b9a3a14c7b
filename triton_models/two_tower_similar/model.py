"""Triton Python-backend model: the items nearest to an item by the Two-Tower's item embeddings.

SOURCE TEMPLATE. ``cascade export two-tower`` copies this file into each version folder
(``triton_models/two_tower_similar/<N>/model.py``, ``two_tower.similar_export``) next to:

    item_embeddings.npy   float32 (n_items, dim), row order = item_ids.npy (the two_tower
                          version N's file)
    item_ids.npy          int64, sorted: the data set's own item ids
    metadata.json         limits (max_k, max_exclude_items), versions

Self-contained on purpose, like ``two_tower/model.py``: the production Triton image has torch and
numpy but not the project's packages. The wire contract is ``two_tower/similar_contract.py``.

Exact search: the vectors are L2-normalised once at load (they already are; normalising again
makes the score a cosine whatever the export wrote), then one (n, dim) @ (dim, n_items) product
per batch, the query item and the request's ``exclude_items`` masked to -inf, ``torch.topk``.
Dynamic batching hands ``execute`` several requests: the valid ones are scored together; an
invalid one (or an unknown item) gets its own error response and the others are unaffected.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack

NEG_INF = float("-inf")
# two_tower/similar_contract.py UNKNOWN_ITEM_MESSAGE (a test checks they agree)
UNKNOWN_ITEM_MESSAGE = "unknown item_id"


class BadRequest(ValueError):
    """A request the model refuses; its message goes back to the client as a Triton error."""


def _invalid_arg(message: str | None) -> Any:
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
        with open(os.path.join(folder, "metadata.json")) as f:
            meta = json.load(f)
        self.max_k = int(meta["max_k"])
        items = np.load(os.path.join(folder, "item_ids.npy"), allow_pickle=False)
        emb = np.load(os.path.join(folder, "item_embeddings.npy"), allow_pickle=False)
        emb = np.asarray(emb, dtype=np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb / np.where(norms > 0, norms, 1.0)
        self.item_ids = torch.from_numpy(items.astype(np.int64)).to(self.device)
        self.item_emb = torch.from_numpy(np.ascontiguousarray(emb)).to(self.device)
        self.item_emb_t = self.item_emb.T.contiguous()
        self.version = meta.get("artifact_version", "?")
        if len(items):  # the first calls are slow (allocations): before Triton reports ready
            for _ in range(3):
                self._top_k(
                    torch.zeros(1, dtype=torch.int64, device=self.device),
                    torch.ones(1, dtype=torch.int64, device=self.device),
                    None,
                )
        pb_utils.Logger.log_info(
            f"two_tower_similar version {args['model_version']} (artifact {self.version}): "
            f"{len(items)} items, device {self.device}"
        )

    def _int_input(self, request: Any, name: str, *, optional: bool = False) -> torch.Tensor | None:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            if optional:
                return None
            raise BadRequest(f"missing input '{name}'")
        return from_dlpack(tensor.to_dlpack()).to(self.device)

    def _positions(self, item_id: torch.Tensor) -> torch.Tensor:
        """Row of each id in the sorted ``item_ids``; BadRequest for an id the model lacks."""
        n_items = self.item_ids.numel()
        if n_items == 0:
            raise BadRequest(f"{UNKNOWN_ITEM_MESSAGE} {int(item_id[0])}: the model has no items")
        pos = torch.searchsorted(self.item_ids, item_id).clamp(max=n_items - 1)
        unknown = self.item_ids[pos] != item_id
        if bool(unknown.any()):
            raise BadRequest(f"{UNKNOWN_ITEM_MESSAGE} {int(item_id[unknown][0])}")
        return pos

    def _parse(self, request: Any) -> dict[str, Any]:
        item_id = self._int_input(request, "item_id")
        k = self._int_input(request, "k")
        assert item_id is not None and k is not None
        item_id = item_id.reshape(-1)
        n = item_id.shape[0]
        k = k.reshape(-1).to(torch.int64)
        if k.shape[0] != n:
            raise BadRequest(f"k has {k.shape[0]} rows for {n} item ids")
        if bool((item_id < 0).any()):
            raise BadRequest(f"invalid item_id {int(item_id[item_id < 0][0])}: ids are >= 0")
        if bool(((k < 1) | (k > self.max_k)).any()):
            bad = int(k[(k < 1) | (k > self.max_k)][0])
            raise BadRequest(f"k={bad} out of range: 1 <= k <= {self.max_k}")
        exclude = self._int_input(request, "exclude_items", optional=True)
        if exclude is not None:
            exclude = exclude.reshape(n, -1)
            if bool((exclude < -1).any()):
                raise BadRequest("invalid item id in exclude_items: ids are >= 0, -1 pads")
        return {"pos": self._positions(item_id), "k": k, "exclude": exclude}

    def _top_k(
        self, pos: torch.Tensor, k: torch.Tensor, exclude: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ids and scores, width = the largest k; -1 / -inf after each row's own k."""
        with torch.inference_mode():
            scores = self.item_emb[pos] @ self.item_emb_t
            n, n_items = scores.shape
            rows = torch.arange(n, device=self.device)
            scores[rows, pos] = NEG_INF  # never the query item itself
            if exclude is not None:
                n_ex = self.item_ids.numel()
                at = torch.searchsorted(self.item_ids, exclude).clamp(max=n_ex - 1)
                hit = self.item_ids[at] == exclude
                mask = torch.zeros((n, n_items + 1), dtype=torch.bool, device=self.device)
                mask.scatter_(1, torch.where(hit, at + 1, torch.zeros_like(at)), True)
                scores.masked_fill_(mask[:, 1:], NEG_INF)
            width = int(k.max())
            top = min(width, n_items)
            values, index = torch.topk(scores, top, dim=1)
            ids = self.item_ids[index]
            if top < width:
                ids = torch.nn.functional.pad(ids, (0, width - top), value=-1)
                values = torch.nn.functional.pad(values, (0, width - top), value=NEG_INF)
            cut = torch.arange(width, device=self.device).unsqueeze(0) >= k.unsqueeze(1)
            cut |= torch.isinf(values)
            ids = ids.masked_fill(cut, -1)
            values = values.masked_fill(cut, NEG_INF)
        return ids.contiguous(), values.contiguous()

    def execute(self, requests: list[Any]) -> list[Any]:
        parsed: list[dict[str, Any] | None] = []
        errors: list[str | None] = []
        for request in requests:
            try:
                parsed.append(self._parse(request))
                errors.append(None)
            except BadRequest as exc:
                parsed.append(None)
                errors.append(str(exc))
        responses = []
        # Rows with and without exclude_items are scored apart (one product each).
        results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for with_exclude in (False, True):
            group = [
                (i, p)
                for i, p in enumerate(parsed)
                if p is not None and (p["exclude"] is not None) == with_exclude
            ]
            if not group:
                continue
            pos = torch.cat([p["pos"] for _, p in group])
            k = torch.cat([p["k"] for _, p in group])
            exclude = None
            if with_exclude:
                width = max(p["exclude"].shape[1] for _, p in group)
                exclude = torch.cat(
                    [
                        torch.nn.functional.pad(
                            p["exclude"], (0, width - p["exclude"].shape[1]), value=-1
                        )
                        for _, p in group
                    ]
                )
            ids, values = self._top_k(pos, k, exclude)
            start = 0
            for i, p in group:
                n, width = p["pos"].shape[0], int(p["k"].max())
                results[i] = (ids[start : start + n, :width], values[start : start + n, :width])
                start += n
        for i, err in enumerate(errors):
            if err is not None:
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[], error=_invalid_arg(err))
                )
                continue
            ids, values = results[i]
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
        pb_utils.Logger.log_info(f"two_tower_similar artifact {self.version} unloaded")
