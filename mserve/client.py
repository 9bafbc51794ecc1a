"""A client for a running mserve server: KServe V2 for inference, TF Serving REST for status,
the admin API (with a token) for lifecycle changes.

Server answers become the same errors the local commands raise: a 4xx is the request's fault
(exit 1 or 2), an unreachable or failing server, or a refused token, an environment problem
(exit 3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from .errors import (
    AdminDisabled,
    CheckFailed,
    Conflict,
    EnvironmentProblem,
    InputError,
    MserveError,
    NotFoundError,
    Unauthorized,
    UsageError,
)
from .inputs import to_feeds
from .reference import Reference
from .signature import DTYPE_BY_V2, V2_BY_DTYPE, TensorSpec

if TYPE_CHECKING:
    import numpy as np

ERRORS: dict[int, type[MserveError]] = {
    400: InputError,
    401: Unauthorized,
    403: AdminDisabled,
    404: NotFoundError,
    409: Conflict,
    413: InputError,
    422: CheckFailed,
}


class ServerClient:
    def __init__(self, url: str, timeout: float = 30.0, token: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--server {url!r}: give an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.admin = token is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, *, raw: bool = False, **options: Any) -> Any:
        try:
            reply = self.http.request(method, path, **options)
        except httpx.HTTPError as exc:
            raise EnvironmentProblem(f"cannot reach {self.url}: {exc.__class__.__name__}") from None
        if reply.status_code < 400:
            return reply.content if raw else reply.json()
        try:
            message = str(reply.json()["error"])
        except (ValueError, KeyError, TypeError):
            message = reply.text[:200] or reply.reason_phrase
        error = ERRORS.get(reply.status_code)
        if error is not None:
            raise error(message)
        raise EnvironmentProblem(f"{self.url} answered {reply.status_code}: {message}")

    def resolve(self, ref: Reference) -> int | None:
        """The version a label names on this server (None: the server's default)."""
        if ref.label is None:
            return ref.version
        meta = self._request("GET", f"/v1/models/{ref.model}/labels/{ref.label}/metadata")
        return int(meta["model_spec"]["version"])

    def signature(self, model: str, version: int | None) -> list[TensorSpec]:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "")
        meta = self._request("GET", path)
        return [
            TensorSpec(
                t["name"],
                DTYPE_BY_V2.get(t["datatype"], "string"),
                tuple(None if d < 0 else d for d in t["shape"]),
            )
            for t in meta["inputs"]
        ]

    def infer(self, ref: Reference, data: Any) -> tuple[int, dict[str, np.ndarray[Any, Any]]]:
        """Run ``data`` (anything ``mserve.inputs`` loads) on the version ``ref`` names."""
        from .protocol import v2

        version = self.resolve(ref)
        specs = self.signature(ref.model, version)
        feeds = to_feeds(specs, data)
        tensors = {spec.name: (feeds[spec.name], V2_BY_DTYPE[spec.dtype]) for spec in specs}
        # Binary tensors: exact values (NaN and infinity included); the reply comes as JSON.
        body, length = v2.encode_request(tensors, binary=True)
        path = f"/v2/models/{ref.model}" + (f"/versions/{version}" if version is not None else "")
        reply = self._request(
            "POST",
            path + "/infer",
            raw=True,
            content=body,
            headers={
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(length),
            },
        )
        answered, outputs = v2.decode_response(reply, None)
        return int(answered), outputs

    def status(self, model: str | None = None) -> dict[str, Any]:
        live = self._request("GET", "/v2/health/live").get("live", False)
        try:
            ready = bool(self._request("GET", "/v2/health/ready").get("ready", False))
        except MserveError:
            ready = False
        if self.admin:  # the admin view adds retirements and the audit trail
            return {
                "server": self.url,
                "live": live,
                "ready": ready,
                "models": self.admin_status(model),
            }
        models = self._request("GET", "/v2/models")["models"]
        if model is not None:
            models = [m for m in models if m["name"] == model]
            if not models:
                raise NotFoundError(f"model '{model}' not found on {self.url}")
        result = []
        for entry in models:
            statuses = self._request("GET", f"/v1/models/{entry['name']}")["model_version_status"]
            result.append(
                {
                    "name": entry["name"],
                    "labels": entry["labels"],
                    "versions": [
                        {
                            "version": int(s["version"]),
                            "state": s["state"],
                            "error": s["status"]["error_message"],
                        }
                        for s in statuses
                    ],
                }
            )
        return {"server": self.url, "live": live, "ready": ready, "models": result}

    # -- admin API (needs the token) --------------------------------------------------------

    def admin_status(self, model: str | None = None) -> list[dict[str, Any]]:
        if model is None:
            return list(self._request("GET", "/admin/models")["models"])
        return [self._request("GET", f"/admin/models/{model}")]

    def change(self, model: str, operation: str, **fields: Any) -> dict[str, Any]:
        """Run ``operation`` (promote, rollback, retire, canary, canary/promote, canary/abort);
        the reply's change and model status."""
        body = {k: v for k, v in fields.items() if v is not None}
        return dict(self._request("POST", f"/admin/models/{model}/{operation}", json=body))

    def metrics(self) -> str:
        """The server's Prometheus metrics, as text."""
        return bytes(self._request("GET", "/metrics", raw=True)).decode("utf-8", "replace")

    def canary(self, model: str) -> dict[str, str] | None:
        """The canary this server applies to MODEL (mserve_canary_info's labels), if any."""
        from .canary_report import canaries_in

        return canaries_in(self.metrics()).get(model)

    def serves(self, model: str, label: str, version: int) -> bool:
        """Does this server answer requests for ``model@label`` with ``version``?"""
        try:
            reply = self._request("GET", f"/v1/models/{model}/labels/{label}")
        except MserveError:
            return False
        return any(
            s["version"] == str(version) and s["state"] == "AVAILABLE"
            for s in reply["model_version_status"]
        )
