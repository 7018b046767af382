#!/usr/bin/env bash
# The main job: set up, then classify real photos with the pretrained EfficientNet-Lite0 and profile it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh "pretrained,demo,serve,dist"
mkdir -p out/photos
# Real photos shipped with scikit-image (public domain): a cat, an espresso, a rocket, an astronaut.
.venv/bin/python - <<'PY'
import skimage.data
from PIL import Image
for name, ext in [("chelsea", "png"), ("coffee", "png"), ("rocket", "jpg"), ("astronaut", "jpg")]:
    Image.fromarray(getattr(skimage.data, name)()).save(f"out/photos/{name}.{ext}")
PY
.venv/bin/decaf classify out/photos/* --top 3
.venv/bin/decaf classify out/photos/* --top 3 --json > out/predictions.json
# profile the pretrained file itself (BatchNorm folded into the convolutions, as it is used)
model="$(.venv/bin/python -c 'from decaf.pretrained import pretrained_path; print(pretrained_path())')"
.venv/bin/decaf profile "$model" --batch 10 --iters 5 --json out/profile.json --csv out/profile.csv --plot out/profile.png
echo "wrote out/predictions.json, out/profile.json, out/profile.csv, out/profile.png"
