#!/usr/bin/env bash
# SMCA-DETR demo weights (smca_detr_demo: polyp boxes at 192x256), from scratch with the project's CLI only.
# 1,200 synthetic frames (seed 2; 900 train / 300 validation), held-out test: the 64 frames of seed 1.
# GAUSSIAN=false trains the plain-DETR ablation instead (run "smca_detr_demo_nogauss", not packaged);
# scripts/demo/smca_vs_detr.sh runs both side by side and compares their curves (SMCA's claim).
# Usage: bash scripts/demo/train_smca.sh     (the shipped weights: MAX_MINUTES=75 on 2 CPU cores, beside the ablation)
source "$(dirname "$0")/common.sh"
endo_large
run=smca_detr_demo
[ "${GAUSSIAN:-true}" = false ] && run=smca_detr_demo_nogauss
finetune "$run" smca_detr_demo endo_large/detection --config "gaussian=${GAUSSIAN:-true}" \
  --epochs "${EPOCHS:-100}" --batch-size 8 --lr 2e-4 --patience 1000 --augment standard
[ "$run" = smca_detr_demo ] && package smca_detr_demo endo_test/detection --check-fraction 0.25
