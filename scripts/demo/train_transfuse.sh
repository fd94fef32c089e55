#!/usr/bin/env bash
# TransFuse demo weights (transfuse_demo, polyp masks), from scratch with the project's CLI only:
#   medvit synth -> medvit finetune -> medvit package (held-out test Dice on the fp16 weights).
# Usage: bash scripts/demo/train_transfuse.sh     (~25-40 min on 2 CPU cores; see common.sh for the settings)
source "$(dirname "$0")/common.sh"
endo_small
finetune transfuse_demo transfuse_demo endo_train/segmentation \
  --epochs "${EPOCHS:-24}" --batch-size 4 --lr 2e-4 --patience 8 --augment standard
package transfuse_demo endo_test/segmentation
