"""The bare FastAPI/uvicorn baseline of ``make bench-serve``: what one worker serves doing nothing.

One GET route at the gateway's path, ``/v1/recommendations/{user_id}?k=``, answering the same
JSON shape as the gateway's recommendation response (``k`` items, default 20, with
``item_id``/``score``, ``served_by``, ``fallback_reason``, ``model_version``, ``request_id``),
serialized with orjson like the gateway, under one uvicorn worker with the gateway's uvicorn
options (``gateway/__main__.py``). No features, no model, no middleware: the gateway's best
throughput divided by this app's, same driver, same machine, same run, is a figure that holds
from one machine to the next. The answer's ``X-Served-By`` header is ``bare`` so the
benchmark's tables say which process answered.

    python -m cascade.bench.bare_app --port 8100 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import Response

from cascade.runtime.serve import run_service

PATH = "/v1/recommendations/{user_id}"  # gateway.schemas.RECOMMENDATIONS_PATH + "/{user_id}"
N_ITEMS = 3_000  # item ids stay in a demo-size catalogue
SERVED_BY_HEADER = "X-Served-By"


def recommendation_body(user_id: int, k: int, request_id: str) -> dict[str, Any]:
    """The gateway's response shape: ``k`` items, best first, with made-up ids and scores."""
    return {
        "user_id": user_id,
        "items": [
            {"item_id": (user_id * 7919 + 31 * i) % N_ITEMS, "score": 1.0 - i / (k + 1)}
            for i in range(k)
        ],
        "served_by": "two_tower",
        "fallback_reason": None,
        "model_version": "bare",
        "request_id": request_id,
    }


def create_app() -> FastAPI:
    """The app: one GET route."""
    app = FastAPI(title="bench-serve bare baseline")

    @app.get(PATH)
    async def recommend(user_id: int, k: int = 20) -> Response:
        body = recommendation_body(user_id, k, uuid.uuid4().hex)
        return Response(
            orjson.dumps(body),
            media_type="application/json",
            headers={SERVED_BY_HEADER: "bare"},
        )

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT, with the gateway's uvicorn options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    return run_service(create_app(), host=args.host, port=args.port)  # the gateway's options


if __name__ == "__main__":
    sys.exit(main())
