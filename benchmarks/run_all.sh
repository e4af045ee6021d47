#!/usr/bin/env bash
# Run every benchmark on an otherwise idle machine and keep each JSON result.
#   bash benchmarks/run_all.sh results/        (GUI benchmark needs a display: runs under xvfb-run)
set -euo pipefail
out="${1:-benchmark_results}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
python benchmarks/inference.py > "$out/inference.json"
python benchmarks/time_breakdown.py > "$out/time_breakdown.json"
python benchmarks/float32_backends.py > "$out/float32_backends.json"
python benchmarks/tile_plan.py > "$out/tile_plan.json"
python benchmarks/postprocess.py > "$out/postprocess.json"
python benchmarks/weight_map.py > "$out/weight_map.json"
python benchmarks/training.py > "$out/training.json"
python benchmarks/large_image.py --size 20000 > "$out/large_image.json"
python benchmarks/blockwise_vs_memory.py > "$out/blockwise_vs_memory.json"
xvfb-run -a python benchmarks/gui_responsiveness.py --seconds 60 > "$out/gui_responsiveness.json"
python benchmarks/first_step.py > "$out/first_step.json"
# These need ../shared/data and take minutes (finetune.py's whole grid takes hours: run it by hand).
python benchmarks/magnification.py > "$out/magnification.jsonl"
python benchmarks/magnification.py --diameter-from-truth --scales 0.5 2 3 > "$out/magnification_diameter.jsonl"
echo "results in $out/"
