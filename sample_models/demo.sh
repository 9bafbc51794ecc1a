#!/usr/bin/env bash
# The main job on the bundled samples: export, validate, list, show, predict.
# Usage: sample_models/demo.sh [REPO]   (default build/demo-models; it is recreated)
set -euo pipefail
cd "$(dirname "$0")/.."
export MSERVE_REPO=${1:-build/demo-models}
rm -rf "$MSERVE_REPO"
run() { printf '\n$ %s\n' "$*"; "$@"; }

run mserve export sample_models/iris_classifier.joblib --name iris --trust-source \
    --sample sample_models/iris_sample.csv
run mserve export sample_models/diabetes_regressor.joblib --name diabetes --trust-source \
    --sample sample_models/diabetes_sample.npy
run mserve export sample_models/iris_classifier.onnx --name iris --sample sample_models/iris_sample.csv
run mserve validate iris:2 --against iris:1
run mserve validate diabetes
run mserve list
run mserve show iris
run mserve predict iris --input '[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]'
run mserve predict diabetes --input @sample_models/diabetes_sample.npy --json
printf '\ndemo finished: repository at %s\n' "$MSERVE_REPO"
