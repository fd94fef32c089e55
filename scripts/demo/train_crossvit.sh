#!/usr/bin/env bash
# CrossViT demo weights (crossvit_demo: polyp present / absent), from scratch with the project's CLI only.
# 1,200 synthetic frames (seed 2; 900 train / 300 validation), held-out test: the 64 frames of seed 1.
# Usage: bash scripts/demo/train_crossvit.sh      (a GPU is advised: hours on 2 CPU cores)
source "$(dirname "$0")/common.sh"
endo_large
finetune crossvit_demo crossvit_demo endo_large/classification \
  --epochs "${EPOCHS:-120}" --batch-size 32 --lr 3e-4 --patience 30 --augment standard
package crossvit_demo endo_test/classification --check-fraction 0.25
