"""A deliberately broken Two-Tower version for Triton's Python backend (tests only).

It honours the contract's names, dtypes and shapes but answers garbage: every row's ids are
one id repeated and its scores NaN, the answer of a model whose weights went bad. The gateway
must refuse every answer, serve a fallback and open the primary's breaker.
"""

from __future__ import annotations

from typing import Any

import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.item = 1  # an id the catalogue has; repeated, it breaks "unique"

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            k = from_dlpack(pb_utils.get_input_tensor_by_name(request, "k").to_dlpack())
            rows, width = k.shape[0], int(k.max())
            ids = torch.full((rows, width), self.item, dtype=torch.int64)
            scores = torch.full((rows, width), float("nan"), dtype=torch.float32)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor.from_dlpack("item_ids", to_dlpack(ids)),
                        pb_utils.Tensor.from_dlpack("scores", to_dlpack(scores)),
                    ]
                )
            )
        return responses
