"""GET routes refuse query parameters they do not take (422 with a reason), as POST bodies refuse
unknown fields: a GET ``exclude`` or a misspelt filter was served as if absent (issue 19)."""

from __future__ import annotations

from gateway.main import create_app
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import Fakes
from tests.gateway.test_api import make_settings


def test_unknown_query_parameters_are_a_422_that_names_them() -> None:
    fakes = Fakes()
    with AppClient(create_app(make_settings(), components=fakes.factory)) as client:
        ok = client.get("/v1/recommendations/1?k=3&include_categories=a&exclude_categories=b")
        assert ok.status_code == 200
        r = client.get("/v1/recommendations/1?k=3&exclude=140&exclude=182")
        assert r.status_code == 422 and r.json()["code"] == "invalid_request"
        assert "unknown query parameter 'exclude'" in r.json()["detail"]
        assert "POST /v1/recommendations" in r.json()["detail"]
        r = client.get("/v1/recommendations/1?k=3&include_category=comedy")
        assert r.status_code == 422 and "'include_category'" in r.json()["detail"]
        r = client.get("/v1/items/1/similar?k=3&user_id=4")
        assert r.status_code == 422 and "'user_id'" in r.json()["detail"]
