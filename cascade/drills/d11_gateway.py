"""The gateway process of drill D11: the real app, the real Triton client, the rollout from
``GATEWAY_ROLLOUT_*``, served by uvicorn; features from an ``.npz`` the drill wrote.

Features come from memory, not Feast: D11 judges the model rollout (routing, shadow, analysis,
rollback), and a Feast repository with a materialized online store for the drill's data set is
what the drill stack (``make drill``) builds for D1-D10; the feature values are the same ones
(``cascade.data.features.user_state`` of the training interactions). No MF service: a request
the primary cannot serve gets the popular tier, still a 200.

``python -m cascade.drills.d11_gateway --features F.npz --triton HOST:PORT --port P``
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import numpy as np
import uvicorn

from gateway.components import Components, build_breaker, chain_config
from gateway.main import create_app
from gateway.metrics import GatewayMetrics
from gateway.resilience.chain import FallbackChain
from gateway.settings import GatewaySettings
from gateway.tiers.popular import PopularList
from gateway.tiers.triton import TritonPrimary
from gateway.tiers.types import UserFeatures
from two_tower import contract


class MemoryFeatures:
    """A feature source over arrays (see the module docstring); padding ``-1`` stripped."""

    def __init__(self, path: str) -> None:
        data = np.load(path, allow_pickle=False)
        self.rows: dict[int, UserFeatures] = {}
        for i, user in enumerate(data["user_id"]):
            recent = tuple(int(x) for x in data["recent_items"][i] if x >= 0)
            seen = tuple(int(x) for x in data["seen_items"][i] if x >= 0)
            self.rows[int(user)] = UserFeatures(
                user_id=int(user),
                interaction_count=int(data["interaction_count"][i]),
                recent_items=recent,
                seen_items=seen,
            )
        self.items = data["items"].tolist()
        self.counts = data["counts"].tolist()

    async def read(self, user_id: int, *, timeout_s: float) -> UserFeatures | None:
        return self.rows.get(user_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", required=True)
    parser.add_argument("--triton", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    features = MemoryFeatures(args.features)
    settings = GatewaySettings(
        triton_url=args.triton,
        mf_url="",
        features_enabled=False,
        popular_refresh_s=0,
        gc_freeze=False,
        json_logs=False,
    )

    async def factory(s: GatewaySettings, metrics: GatewayMetrics) -> Components:
        primary = TritonPrimary(url=args.triton, model=contract.MODEL_NAME)
        popular = PopularList.from_arrays(
            items=features.items, counts=features.counts, version="d11"
        )
        chain = FallbackChain(
            config=chain_config(s),
            popular=popular,
            breaker=build_breaker(s, metrics),
            metrics=metrics,
            features=features,
            primary=primary,
        )
        return Components(chain=chain, primary=primary, closers=[primary.close])

    app = create_app(settings, components=factory)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
