"""The OpenAPI document's prose as /v1/docs shows it: descriptions are CommonMark, so a
placeholder written as ``<id>`` outside a code span is read as an HTML tag and vanishes (the
service key's format read ``ApiKey cgk__`` in the docs page)."""

from __future__ import annotations

import re
from typing import Any

from .conftest import World

_TAG = re.compile(r"<[A-Za-z][^>\n]*>")


def _texts(node: Any, path: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("description", "summary") and isinstance(value, str):
                found.append((f"{path}/{key}", value))
            found += _texts(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _texts(value, f"{path}[{i}]")
    return found


def test_no_placeholder_is_swallowed_as_html(world: World) -> None:
    document = world.client.get("/v1/openapi.json").json()
    swallowed = [
        (where, text)
        for where, text in _texts(document)
        if _TAG.search(re.sub(r"`[^`]*`", "", text))  # code spans show their text as written
    ]
    assert swallowed == []


def test_service_key_format_is_shown(world: World) -> None:
    scheme = world.client.get("/v1/openapi.json").json()["components"]["securitySchemes"]["service"]
    assert "`ApiKey cgk_<id>_<secret>`" in scheme["description"]


def test_errors_are_documented_as_served(world: World) -> None:
    """Each error is documented under the one media type it is served as, with its schema."""
    document = world.client.get("/v1/openapi.json").json()
    as_served = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    wrong = [
        (method, path, status, sorted(response.get("content", {})))
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if status.startswith(("4", "5")) and response.get("content", {}) != as_served
    ]
    assert wrong == []
    served = world.client.post("/v1/audit/search", json={}, headers={"X-Device-Id": "PC-1"})
    assert (served.status_code, served.headers["content-type"]) == (401, "application/problem+json")


def test_the_docs_page_loads_nothing_from_another_origin(world: World) -> None:
    """An officer pastes a bearer token into /v1/docs: a script from a CDN (FastAPI's default,
    unpinned) could read it, and offline the page was blank. Every asset comes from the app."""
    page = world.client.get("/v1/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert assets and all(a.startswith("/v1/docs/static/") for a in assets), assets
    assert "http://" not in page.text and "https://" not in page.text
    for asset in assets:
        r = world.client.get(asset)
        assert r.status_code == 200 and len(r.content) > 1000, asset
    assert "/v1/docs/static" not in str(world.client.get("/v1/openapi.json").json()["paths"])


def test_the_document_and_the_docs_files_are_counted_by_name_not_as_unmatched(world: World) -> None:
    world.client.get("/v1/openapi.json")
    world.client.get("/v1/docs/static/swagger-ui.css")
    world.client.get("/v1/no-such-route-18687654321")
    metrics = world.client.get("/metrics").text
    assert 'route="/v1/openapi.json",status="200"' in metrics
    assert 'route="/v1/docs/static",status="200"' in metrics
    assert 'route="unmatched",status="404"' in metrics and "18687654321" not in metrics
