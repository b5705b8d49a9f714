#!/usr/bin/env bash
# Set up .venv if needed (Python >= 3.12, a few minutes the first time), then run the demo:
# find "the blue basketball court located at the top of the scene" in the shipped demo scene with the shipped demo model, write
# demo_output/result.gpkg and a PNG quick-look demo_output/result.png.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
mkdir -p demo_output
expr="${1:-the blue basketball court located at the top of the scene}"
.venv/bin/rrsis-geo segment sample_data/demo_scene.tif -e "$expr" -o demo_output/result.gpkg --overwrite
.venv/bin/rrsis-geo render sample_data/demo_scene.tif --vector demo_output/result.gpkg \
  -e "$expr" -o demo_output/result.png
echo "demo: polygons in demo_output/result.gpkg (open it in QGIS), picture in demo_output/result.png"
