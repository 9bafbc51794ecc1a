"""The OpenAPI document the server serves: valid OpenAPI 3.1, and in step with the router (every
route the server answers is described, and every described route is answered)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pydantic
import pytest
from openapi_pydantic import OpenAPI

from .conftest import InProcess

TOKEN = "s3cret-token"
ANSWERED = [  # every route shape rest/routes.py answers, with concrete names
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models"),
    ("GET", "/v2/models/stats"),
    ("GET", "/v2/models/iris"),
    ("GET", "/v2/models/iris/versions/1"),
    ("GET", "/v2/models/iris/ready"),
    ("GET", "/v2/models/iris/versions/1/ready"),
    ("GET", "/v2/models/iris/config"),
    ("GET", "/v2/models/iris/versions/1/config"),
    ("GET", "/v2/models/iris/stats"),
    ("GET", "/v2/models/iris/versions/1/stats"),
    ("POST", "/v2/models/iris/infer"),
    ("POST", "/v2/models/iris/versions/1/infer"),
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/iris/load"),
    ("POST", "/v2/repository/models/iris/unload"),
    ("GET", "/v1/models/iris"),
    ("GET", "/v1/models/iris/versions/1"),
    ("GET", "/v1/models/iris/labels/stable"),
    ("GET", "/v1/models/iris/metadata"),
    ("GET", "/v1/models/iris/versions/1/metadata"),
    ("GET", "/v1/models/iris/labels/stable/metadata"),
    *[
        ("POST", f"/v1/models/iris{form}:{verb}")
        for verb in ("predict", "classify", "regress")
        for form in ("", "/versions/1", "/labels/stable")
    ],
    ("GET", "/admin/models"),
    ("GET", "/admin/models/iris"),
    ("POST", "/admin/models/iris/promote"),
    ("POST", "/admin/models/iris/rollback"),
    ("POST", "/admin/models/iris/retire"),
    ("POST", "/admin/models/iris/canary"),
    ("POST", "/admin/models/iris/canary/promote"),
    ("POST", "/admin/models/iris/canary/abort"),
    ("GET", "/metrics"),
    ("GET", "/monitoring/prometheus/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/v2/docs/dataplane.json"),
]


@pytest.fixture(scope="module")
def admin_app(tmp_path_factory: pytest.TempPathFactory, served_repo: Path) -> InProcess:
    """On a private copy: the admin routes it calls change the repository (unload, promote)."""
    repo = tmp_path_factory.mktemp("openapi") / "models"
    shutil.copytree(served_repo, repo)
    return InProcess(repo, admin_token=TOKEN)


@pytest.fixture(scope="module")
def document(admin_app: InProcess) -> dict:
    reply = admin_app.request("GET", "/openapi.json")
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    assert admin_app.request("GET", "/v2/docs/dataplane.json").json() == reply.json()
    return reply.json()


def test_the_document_is_valid_openapi_3(document: dict) -> None:
    OpenAPI.model_validate(document)
    assert document["openapi"].startswith("3.")
    with pytest.raises(pydantic.ValidationError):  # the validator does refuse a broken one
        OpenAPI.model_validate({**document, "info": {"title": 5}})
    admin = document["paths"]["/admin/models/{model}/promote"]["post"]
    assert admin["security"] == [{"adminToken": []}]
    assert document["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"


def described(document: dict, method: str, path: str) -> bool:
    for template, item in document["paths"].items():
        pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/:]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in item:
            return True
    return False


@pytest.mark.parametrize(("method", "path"), ANSWERED)
def test_every_route_answered_is_described(
    admin_app: InProcess, document: dict, method: str, path: str
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    reply = admin_app.request(
        method, path, headers=headers, content=b"{}" if method == "POST" else None
    )
    assert not (reply.status_code == 404 and "no route" in reply.text), reply.text
    assert described(document, method, path)


def test_every_described_route_is_answered(document: dict) -> None:
    concrete = {"model": "iris", "version": "1", "label": "stable"}
    for template, item in document["paths"].items():
        path = re.sub(r"\{([a-z_]+)\}", lambda m: concrete[m.group(1)], template)
        for method in ("get", "post"):
            if method in item:
                assert (method.upper(), path) in ANSWERED, (method, template)
