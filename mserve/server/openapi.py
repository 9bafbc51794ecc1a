"""The OpenAPI 3.1 document of the REST API, served at ``/openapi.json`` (FastAPI's path, which
KServe's Python server uses) and ``/v2/docs/dataplane.json`` (MLServer's).

The V2 part follows KServe's ``rest_predict_v2.yaml``; TF Serving's REST API and mserve's admin
API (bearer token) are described in the same terms. Built once per server: the paths are the
route shapes of ``rest/routes.py``, and a test checks that every route answered is here.
"""

from __future__ import annotations

from typing import Any

import orjson

PATHS = ("/openapi.json", "/v2/docs/dataplane.json")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = _json(_ref("error"), "An error: one line, no path or traceback")


def _responses(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    reasons = {
        400: "Bad request",
        401: "Missing or wrong admin token",
        403: "Admin API off",
        404: "Unknown model, version or label",
        405: "Wrong method",
        409: "The change conflicts with the model's state",
        413: "Body over the limit",
        503: "Not ready, or overloaded",
        504: "Timed out",
    }
    out: dict[str, Any] = {"200": ok}
    for status in errors:
        out[str(status)] = {**ERROR, "description": reasons[status]}
    return out


def _param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


MODEL = _param("model")
VERSION = _param("version", {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"})
LABEL = _param("label")
INFER_ERRORS = (400, 404, 405, 413, 503, 504)


def _get(summary: str, ok: dict[str, Any], *errors: int, **extra: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": _responses(ok, *errors), **extra}}


def _post(
    summary: str, body: str, ok: dict[str, Any], *errors: int, **extra: Any
) -> dict[str, Any]:
    request = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    operation = {"summary": summary, "requestBody": request, "responses": _responses(ok, *errors)}
    return {"post": {**operation, **extra}}


def _versioned(base: str, item: dict[str, Any], label: bool = False) -> dict[str, Any]:
    """BASE (ending in the model) and its /versions/{version} (and /labels/{label}) forms;
    a suffix after the model goes in ITEM's key ``suffix``."""
    suffix = item.pop("suffix", "")
    forms = {f"{base}{suffix}": [MODEL], f"{base}/versions/{{version}}{suffix}": [MODEL, VERSION]}
    if label:
        forms[f"{base}/labels/{{label}}{suffix}"] = [MODEL, LABEL]
    return {path: {"parameters": params, **item} for path, params in forms.items()}


def document(server_version: str) -> dict[str, Any]:
    any_json = _json({"type": "object"}, "OK")
    admin = {"security": [{"adminToken": []}], "tags": ["admin"]}
    paths: dict[str, Any] = {
        "/v2/health/live": _get("Server live", _json(_ref("live"), "Live")),
        "/v2/health/ready": _get("Server ready", _json(_ref("ready"), "Ready"), 503),
        "/v2": _get("Server metadata", _json(_ref("server_metadata"), "OK"), 405),
        "/v2/models": _get("Served models (mserve)", any_json, 405),
        "/v2/models/stats": _get("Statistics of every model", any_json, 405),
        "/metrics": _get("Prometheus metrics", {"description": "Prometheus text format"}),
        "/monitoring/prometheus/metrics": _get(
            "Prometheus metrics (TF Serving's path)", {"description": "Prometheus text format"}
        ),
        "/openapi.json": _get("This document", any_json),
        "/v2/docs/dataplane.json": _get("This document (MLServer's path)", any_json),
        "/v2/repository/index": _post(
            "Repository index", "repository_index_request", any_json, 400, 401, 403, **admin
        ),
        "/admin/models": _get(
            "Models with versions, states and labels", any_json, 401, 403, **admin
        ),
        "/admin/models/{model}": {
            "parameters": [MODEL],
            **_get(
                "One model's versions, states, labels and changes", any_json, 401, 403, 404, **admin
            ),
        },
    }
    for action in ("load", "unload"):
        paths[f"/v2/repository/models/{{model}}/{action}"] = {
            "parameters": [MODEL],
            **_post(
                f"Repository {action}",
                "repository_load_request",
                any_json,
                400,
                401,
                403,
                404,
                **admin,
            ),
        }
    changes = (
        ("promote", "Promote"),
        ("rollback", "Rollback"),
        ("retire", "Retire"),
        ("canary", "Start a canary"),
        ("canary/promote", "Promote the canary's candidate"),
        ("canary/abort", "Abort the canary"),
    )
    for operation, summary in changes:
        body = operation.replace("/", "_")
        paths[f"/admin/models/{{model}}/{operation}"] = {
            "parameters": [MODEL],
            **_post(
                f"{summary} (one repository change)",
                body,
                any_json,
                400,
                401,
                403,
                404,
                409,
                **admin,
            ),
        }
    base = "/v2/models/{model}"
    paths.update(
        _versioned(base, _get("Model metadata", _json(_ref("model_metadata"), "OK"), 400, 404))
    )
    paths.update(
        _versioned(
            base,
            {
                "suffix": "/ready",
                **_get("Model ready", _json(_ref("model_ready"), "Ready"), 400, 503),
            },
        )
    )
    paths.update(
        _versioned(
            base,
            {"suffix": "/config", **_get("Model configuration (Triton's)", any_json, 400, 404)},
        )
    )
    paths.update(
        _versioned(base, {"suffix": "/stats", **_get("Model statistics", any_json, 400, 404)})
    )
    infer = _post(
        "Inference (V2 JSON; the binary tensor extension with Inference-Header-Content-Length)",
        "inference_request",
        _json(_ref("inference_response"), "Outputs"),
        *INFER_ERRORS,
    )
    paths.update(_versioned(base, {"suffix": "/infer", **infer}))
    tf = "/v1/models/{model}"
    paths.update(_versioned(tf, _get("Model status (TF Serving)", any_json, 400, 404), label=True))
    paths.update(
        _versioned(
            tf,
            {"suffix": "/metadata", **_get("Model metadata (TF Serving)", any_json, 400, 404)},
            label=True,
        )
    )
    for verb, body in (
        ("predict", "tf_predict_request"),
        ("classify", "tf_examples_request"),
        ("regress", "tf_examples_request"),
    ):
        tf_verb = _post(f":{verb} (TF Serving)", body, any_json, *INFER_ERRORS)
        paths.update(_versioned(tf, {"suffix": f":{verb}", **tf_verb}, label=True))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mserve",
            "version": server_version,
            "description": (
                "KServe V2 (Open Inference Protocol) REST, TF Serving REST v1, and mserve's "
                'admin API. Every error is {"error": "..."}.'
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY},
    }


def render(server_version: str) -> bytes:
    return orjson.dumps(document(server_version))


SECURITY = {"adminToken": {"type": "http", "scheme": "bearer", "description": "--admin-token"}}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_TENSOR_DATA: dict[str, Any] = {
    "type": "array",
    "items": {
        "anyOf": [_ref("tensor_data"), {"type": "number"}, {"type": "string"}, {"type": "boolean"}]
    },
}
_TENSOR = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string"},
        "parameters": _ref("parameters"),
        "data": _ref("tensor_data"),
    },
    "required": ["name", "shape", "datatype"],
}
SCHEMAS: dict[str, Any] = {
    "error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
    "live": {"type": "object", "properties": {"live": {"type": "boolean"}}},
    "ready": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    "model_ready": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "server_metadata": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": _STRINGS,
        },
        "required": ["name", "version", "extensions"],
    },
    "metadata_tensor": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array"},
        },
        "required": ["name", "datatype", "shape"],
    },
    "model_metadata": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "versions": _STRINGS,
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("metadata_tensor")},
            "outputs": {"type": "array", "items": _ref("metadata_tensor")},
        },
        "required": ["name", "platform"],
    },
    "parameters": {"type": "object"},
    "tensor_data": _TENSOR_DATA,
    "request_input": _TENSOR,
    "request_output": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "parameters": _ref("parameters")},
        "required": ["name"],
    },
    "inference_request": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "parameters": _ref("parameters"),
            "inputs": {"type": "array", "items": _ref("request_input")},
            "outputs": {"type": "array", "items": _ref("request_output")},
        },
        "required": ["inputs"],
    },
    "inference_response": {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": _ref("parameters"),
            "outputs": {"type": "array", "items": _ref("request_input")},
        },
        "required": ["model_name", "outputs"],
    },
    "tf_predict_request": {
        "type": "object",
        "properties": {
            "signature_name": {"type": "string"},
            "instances": {"type": "array"},
            "inputs": {},
        },
    },
    "tf_examples_request": {
        "type": "object",
        "properties": {
            "signature_name": {"type": "string"},
            "context": {"type": "object"},
            "examples": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["examples"],
    },
    "repository_index_request": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    "repository_load_request": {"type": "object", "properties": {"parameters": _ref("parameters")}},
    "promote": {
        "type": "object",
        "properties": {
            "version": {"type": "integer", "minimum": 1},
            "label": {"type": "string"},
            "actor": {"type": "string"},
            "allow_breaking": {"type": "boolean"},
        },
        "required": ["version"],
    },
    "rollback": {
        "type": "object",
        "properties": {"label": {"type": "string"}, "actor": {"type": "string"}},
    },
    "retire": {
        "type": "object",
        "properties": {"version": {"type": "integer", "minimum": 1}, "actor": {"type": "string"}},
        "required": ["version"],
    },
    "canary": {
        "type": "object",
        "properties": {
            "version": {"type": "integer", "minimum": 1},
            "label": {"type": "string"},
            "weight": {"type": "number", "minimum": 0, "maximum": 100},
            "header": {"type": "string"},
            "shadow": {"type": "boolean"},
            "tolerance": {"type": "number", "minimum": 0},
            "actor": {"type": "string"},
            "allow_breaking": {"type": "boolean"},
        },
        "required": ["version"],
    },
    "canary_promote": {"type": "object", "properties": {"actor": {"type": "string"}}},
    "canary_abort": {
        "type": "object",
        "properties": {"actor": {"type": "string"}, "reason": {"type": "string"}},
    },
}
