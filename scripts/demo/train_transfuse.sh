#!/usr/bin/env bash
# Regenerate the TransFuse demo checkpoint from scratch, with the project's CLI only:
#   synthetic frames -> export folders -> medvit finetune -> medvit package (held-out test metric, fp16).
# Usage: bash scripts/demo/train_transfuse.sh        (WORK=build/demo by default; ~25 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
MEDVIT=${MEDVIT:-.venv/bin/medvit}
WORK=${WORK:-build/demo}
[ -d "$WORK/endo_train" ] || $MEDVIT synth endoscopy --out "$WORK/endo_train" --n 320 --seed 0 --shape 192 256
[ -d "$WORK/endo_test" ] || $MEDVIT synth endoscopy --out "$WORK/endo_test" --n 64 --seed 1 --shape 192 256
$MEDVIT finetune "$WORK/endo_train/segmentation" --model transfuse_demo --out "$WORK/runs/transfuse_demo" \
  --epochs ${EPOCHS:-24} --batch-size 4 --lr 2e-4 --patience 8 --augment standard --seed 0 ${RESUME:+--resume}
$MEDVIT package "$WORK/runs/transfuse_demo" --test "$WORK/endo_test/segmentation" \
  --to sample_data/checkpoints/transfuse_demo.safetensors
