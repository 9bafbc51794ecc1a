#!/usr/bin/env bash
# The main job on the bundled samples: export every framework, validate, list, show, predict,
# bench, then serve the repository, predict and bench through the server, and promote, roll
# back, run a canary (with shadow traffic) and retire versions through its admin API.
# Usage: sample_models/demo.sh [REPO]   (default build/demo-models; it is recreated)
set -euo pipefail
cd "$(dirname "$0")/.."
export MSERVE_REPO=${1:-build/demo-models}
rm -rf "$MSERVE_REPO"
run() { printf '\n$ %s\n' "$*"; "$@"; }
S=sample_models

# scikit-learn: a pipeline, a forest, a mixed-type pipeline over named columns; an ONNX file
run mserve export $S/iris_classifier.joblib --name iris --trust-source --sample $S/iris_sample.csv
run mserve export $S/diabetes_regressor.joblib --name diabetes --trust-source --sample $S/diabetes_sample.npy
run mserve export $S/churn_pipeline.joblib --name churn --trust-source --sample $S/churn_sample.csv
run mserve export $S/iris_classifier.onnx --name iris --sample $S/iris_sample.csv
# PyTorch: torch.export, TorchScript, and a factory with a state dict
run mserve export $S/iris_mlp.pt2 --name iris-torch --trust-source --sample $S/iris_sample.csv
run mserve export $S/iris_mlp_torchscript.pt --name iris-torchscript --trust-source --sample $S/iris_sample.csv
run mserve export --from-python sample_models.torch_mlp:build --weights $S/iris_mlp_state_dict.pt \
    --name iris-torch --sample $S/iris_sample.csv
# TensorFlow / Keras: a Keras 3 file and a SavedModel, two inputs and two outputs
run mserve export $S/iris_two_inputs.keras --name iris-keras --trust-source --sample $S/iris_two_inputs_sample.npz
run mserve export $S/iris_two_inputs_savedmodel --name iris-keras --trust-source --sample $S/iris_two_inputs_sample.npz
# Gradient boosting: native XGBoost and LightGBM files
run mserve export $S/iris_xgboost.json --name iris-xgboost --sample $S/iris_sample.csv
run mserve export $S/diabetes_lightgbm.txt --name diabetes-lightgbm --sample $S/diabetes_sample.npy

run mserve validate iris:2 --against iris:1
run mserve validate iris-torch:2 --against iris-torch:1
run mserve validate churn
run mserve list
run mserve show churn
run mserve predict iris --input '[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]'
run mserve predict churn --input '{"tenure_months": [[3]], "monthly_charge": [[80.5]], "contract": [["monthly"]], "region": [["north"]]}'
run mserve predict iris-keras --input @$S/iris_two_inputs_sample.npz
run mserve predict diabetes --input @$S/diabetes_sample.npy --json
# Latency and throughput on onnxruntime, with a gate a CI job would set
run mserve bench iris --batch-size 1 --batch-size 32 --duration 1 --max-p99-ms 1000
# Serve the repository on a free loopback port, and ask it (the CLI, KServe V2, TF Serving REST)
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
GRPC_PORT=$(free_port)
URL=http://127.0.0.1:$PORT
# The admin token turns the admin API on; the CLI reads the same variable.
export MSERVE_ADMIN_TOKEN=${MSERVE_ADMIN_TOKEN:-$(python -c 'import secrets; print(secrets.token_urlsafe())')}
mserve serve "$MSERVE_REPO" --port "$PORT" --grpc-port "$GRPC_PORT" --no-access-log &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 1 120); do  # the server answers once every version has loaded
    mserve status --server "$URL" --json >/dev/null 2>&1 && break
    kill -0 $SERVER 2>/dev/null || { echo "the server exited"; exit 1; }
    sleep 0.5
done
post() { python -c 'import sys, httpx; print(httpx.post(sys.argv[1], content=sys.argv[2]).text)' "$@"; }
run mserve status --server "$URL"
run mserve predict iris --server "$URL" --input '[[5.1, 3.5, 1.4, 0.2]]'
run mserve predict iris-keras --server "$URL" --input @$S/iris_two_inputs_sample.npz
run post "$URL/v2/models/churn/infer" '{"inputs": [
    {"name": "tenure_months", "shape": [1, 1], "datatype": "FP32", "data": [3]},
    {"name": "monthly_charge", "shape": [1, 1], "datatype": "FP32", "data": [80.5]},
    {"name": "contract", "shape": [1, 1], "datatype": "BYTES", "data": ["monthly"]},
    {"name": "region", "shape": [1, 1], "datatype": "BYTES", "data": ["north"]}]}'
run post "$URL/v1/models/iris-torch:predict" '{"instances": [[6.7, 3.0, 5.2, 2.3]]}'
run python -c 'import sys, numpy as np, tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
x = g.InferInput("X", [1, 4], "FP32"); x.set_data_from_numpy(np.array([[6.7, 3.0, 5.2, 2.3]], np.float32))
print("gRPC:", client.infer("iris", [x]).as_numpy("probabilities"))' "127.0.0.1:$GRPC_PORT"
run mserve bench iris --server "$URL" --concurrency 1 --concurrency 8 --duration 2
# The version lifecycle: gates, then the label moves once the server serves the version
run mserve promote iris 1 --server "$URL" --wait --actor demo
run mserve promote iris 2 --server "$URL" --wait --actor demo
run mserve predict iris --server "$URL" --input '[[5.1, 3.5, 1.4, 0.2]]'
run mserve rollback iris --server "$URL" --wait --actor demo
# A canary: a quarter of 'stable''s requests to iris:2, sticky per user, the rest shadowed to it;
# every replica's figures judged against the baseline; then aborted
run mserve canary start iris 2 --weight 25 --header x-user --shadow --server "$URL" --wait --actor demo
python -c 'import sys, httpx
row = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
with httpx.Client() as client:
    answered = [client.post(sys.argv[1], json=row, headers={"x-user": f"user-{i}"}).headers["mserve-model-version"] for i in range(400)]
print("answered by version:", {v: answered.count(v) for v in sorted(set(answered))})' "$URL/v2/models/iris/infer"
run mserve canary show iris --server "$URL" --min-requests 50 --max-latency-ratio 5
run mserve canary abort iris --reason "demo over" --server "$URL" --wait --actor demo
run mserve retire iris 2 --server "$URL" --actor demo
run mserve status iris --server "$URL"
kill -TERM $SERVER && wait $SERVER
trap - EXIT
printf '\ndemo finished: repository at %s, server stopped cleanly\n' "$MSERVE_REPO"
