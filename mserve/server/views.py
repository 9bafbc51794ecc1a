"""JSON views of the server's state, the same for every transport: V2 server and model
metadata, Triton's model configuration and statistics, TF Serving's status and metadata, and
mserve's list of models. gRPC parses the same dictionaries into its messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mserve.errors import NotFoundError
from mserve.protocol.tfserving import SIGNATURE, TF_DTYPES
from mserve.signature import V2_BY_DTYPE, TensorSpec

from .batching import batchable
from .dataplane import DataPlane, Stats

if TYPE_CHECKING:
    from .manager import VersionStatus
    from .served import ServedVersion

PLATFORM = "onnxruntime_onnx"


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    shape = [-1] if spec.shape is None else [d if isinstance(d, int) else -1 for d in spec.shape]
    return {"name": spec.name, "datatype": V2_BY_DTYPE.get(spec.dtype, "BYTES"), "shape": shape}


def model_metadata(served: ServedVersion, versions: list[int]) -> dict[str, Any]:
    return {
        "name": served.model,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [_tensor(s) for s in served.signature.inputs],
        "outputs": [_tensor(s) for s in served.signature.outputs],
    }


def model_config(served: ServedVersion) -> dict[str, Any]:
    """Triton's model configuration, as perf_analyzer and Triton tooling read it."""
    batching = served.settings.batching and batchable(served.signature)

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        dims = _tensor(spec)["shape"]
        kind = "STRING" if spec.dtype == "string" else V2_BY_DTYPE[spec.dtype]
        return {
            "name": spec.name,
            "data_type": f"TYPE_{kind}",
            "dims": dims[1:] if batching else dims,
        }

    config: dict[str, Any] = {
        "name": served.model,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [served.version]}},
        "max_batch_size": served.settings.max_batch_size if batching else 0,
        "input": [tensor(s) for s in served.signature.inputs],
        "output": [tensor(s) for s in served.signature.outputs],
    }
    config["parameters"] = {  # Triton's free-form map: where this version runs
        "execution_providers": {"string_value": ",".join(served.providers)},
        "onnxruntime_threads": {"string_value": str(served.threads)},
    }
    if batching:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": int(served.settings.max_queue_delay_ms * 1000)
        }
    return config


def statistics(plane: DataPlane, model: str | None, version: int | None) -> dict[str, Any]:
    """Triton's statistics extension, for one version, one model or all."""
    served = plane.manager.snapshot.served
    if model is not None and model not in served:
        raise NotFoundError(f"model '{model}' not found")
    entries = []
    for name, versions in sorted(served.items()):
        for number in sorted(versions):
            if (model is not None and name != model) or (version is not None and number != version):
                continue
            s = plane.stats.get((name, number), Stats())
            entries.append(
                {
                    "name": name,
                    "version": str(number),
                    "last_inference": s.last_ms,
                    "inference_count": s.rows,
                    "execution_count": s.success,
                    "inference_stats": {
                        "success": {"count": s.success, "ns": s.success_ns},
                        "fail": {"count": s.fail, "ns": s.fail_ns},
                    },
                }
            )
    if model is not None and version is not None and not entries:
        raise NotFoundError(f"model '{model}' has no version {version} being served")
    return {"model_stats": entries}


def models(plane: DataPlane) -> dict[str, Any]:
    """mserve's list of models (neither V2 nor TF Serving has one)."""
    snapshot = plane.manager.snapshot
    return {
        "models": [
            {
                "name": name,
                "versions": [str(v) for v in sorted(snapshot.served.get(name, {}))],
                "labels": snapshot.labels.get(name, {}),
                "ready": bool(snapshot.served.get(name)),
            }
            for name in sorted(snapshot.status)
        ]
    }


def tf_status(
    plane: DataPlane, model: str, version: int | None, label: str | None
) -> dict[str, Any]:
    """TF Serving's model status: every version this server knows of, or the one named."""
    statuses = plane.manager.snapshot.status.get(model)
    if statuses is None:
        raise NotFoundError(f"model '{model}' not found")
    if label is not None:
        version = plane.resolve(model, label=label).version
    chosen = [s for n, s in sorted(statuses.items()) if version is None or n == version]
    if not chosen:
        which = "" if version is None else f" {version}"
        raise NotFoundError(f"model '{model}' has no version{which}")
    return {"model_version_status": [_tf_version_status(s) for s in chosen]}


def _tf_version_status(status: VersionStatus) -> dict[str, Any]:
    return {
        "version": str(status.version),
        "state": status.state,
        "status": {
            "error_code": "OK" if not status.error else "UNKNOWN",
            "error_message": status.error,
        },
    }


def tf_metadata(served: ServedVersion) -> dict[str, Any]:
    def tensors(specs: tuple[TensorSpec, ...]) -> dict[str, Any]:
        return {
            spec.name: {
                "dtype": TF_DTYPES.get(spec.dtype, "DT_INVALID"),
                "tensor_shape": {
                    "dim": [
                        {"size": str(d if isinstance(d, int) else -1), "name": ""}
                        for d in (spec.shape or ())
                    ],
                    "unknown_rank": spec.shape is None,
                },
                "name": spec.name,
            }
            for spec in specs
        }

    return {
        "model_spec": {"name": served.model, "signature_name": "", "version": str(served.version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    SIGNATURE: {
                        "inputs": tensors(served.signature.inputs),
                        "outputs": tensors(served.signature.outputs),
                        "method_name": "tensorflow/serving/predict",
                        "defaults": {},
                    }
                },
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
            }
        },
    }
