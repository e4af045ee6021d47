#!/usr/bin/env bash
# Run every benchmark on an otherwise idle machine and keep each JSON result.
#   bash benchmarks/run_all.sh results/        (GUI benchmark needs a display: runs under xvfb-run)
set -euo pipefail
out="${1:-benchmark_results}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
python benchmarks/inference.py > "$out/inference.json"
python benchmarks/postprocess.py > "$out/postprocess.json"
python benchmarks/weight_map.py > "$out/weight_map.json"
python benchmarks/training.py > "$out/training.json"
python benchmarks/large_image.py --size 20000 > "$out/large_image.json"
xvfb-run -a python benchmarks/gui_responsiveness.py --seconds 60 > "$out/gui_responsiveness.json"
echo "results in $out/"
