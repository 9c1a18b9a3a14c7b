"""``/docs`` and ``/redoc`` work without internet: every script and stylesheet they load is
served by the process itself (issue 19: Swagger UI from a CDN is blank offline)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from cascade.runtime.api_docs import serve_docs_offline
from tests.gateway.appclient import AppClient


@pytest.fixture
def client() -> Iterator[AppClient]:
    app = FastAPI(title="t", docs_url=None, redoc_url=None)
    serve_docs_offline(app)
    with AppClient(app) as c:
        yield c


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(client: AppClient, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(
        r"url: '([^']+)'", html.text
    )
    assets = [u for u in urls if u.endswith((".js", ".css", ".png"))]
    assert assets, html.text
    for url in assets:
        assert url.startswith("/"), f"{page} loads {url} from another host"
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url


def test_the_gateways_docs_assets_need_no_credentials() -> None:
    from gateway.edge.security import OPEN_PATHS, OPEN_PREFIXES

    assert {"/docs", "/redoc", "/openapi.json"} <= OPEN_PATHS
    assert "/docs-assets/swagger-ui-bundle.js".startswith(OPEN_PREFIXES)
