#!/usr/bin/env bash
# Run every benchmark on an otherwise idle machine and keep each JSON result
# where the results page (docs/results.md) renders it from:
#   bash benchmarks/run_all.sh                 (into docs/results/speed/)
#   bash benchmarks/run_all.sh other/folder/   (anywhere else)
# The GUI benchmarks need a display: they run under xvfb-run.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/results/speed}"
mkdir -p "$out"
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
# These need ../shared/data.
tiles=../shared/data/dsb2018-fluo/val/images
xvfb-run -a python benchmarks/gui_responsiveness.py --segment-only --tiles "$tiles" \
  > "$out/gui_segment_fluo_tiles.json"
xvfb-run -a python benchmarks/gui_responsiveness.py --segment-only --tiles "$tiles" \
  --tile-scale 0.33 > "$out/gui_segment_fluo_tiles_small.json"
# Minutes each; the history page's "Other magnifications" came from these.
python benchmarks/magnification.py > "$out/magnification.jsonl"
python benchmarks/magnification.py --diameter-from-truth --scales 0.5 2 3 > "$out/magnification_diameter.jsonl"
echo "results in $out/"
