#!/usr/bin/env bash
# Demo weights of one WMH segmentation model on synthetic MNI152-based FLAIR + T1 volumes (2 mm):
#   swin_unetr_demo | unetr_demo | vosht_demo | truenet_demo | unet_demo (the CNN baseline)
# 60 subjects (seed 0; 45 train / 15 validation, 64^3 patches), held-out test: the 20 subjects of seed 1.
# Usage: bash scripts/demo/train_brain.sh MODEL   (the shipped transformer weights: MAX_MINUTES=85 for the Swin
# ones, 45 for UNETR, the three side by side on 2 CPU cores with OMP_NUM_THREADS=1; the CNNs came from a GPU)
source "$(dirname "$0")/common.sh"
model=${1:?"give the model: swin_unetr_demo, unetr_demo, vosht_demo, truenet_demo or unet_demo"}
# batch: cases per step. The transformers take 4 patches per case (the official BTCV scripts' num_samples,
# their registry entries' patches_per_case), so batch 1 is 4 patches per step; the CNNs take 1 per case.
case $model in
  truenet_demo) lr=1e-3 batch=4 ;;  # TrUE-Net's own training rate (Adam)
  unet_demo) lr=4e-4 batch=4 ;;
  swin_unetr_demo|unetr_demo|vosht_demo) lr=4e-4 batch=1 ;;
  *) echo "train_brain.sh: no demo recipe for $model" >&2; exit 2 ;;
esac
brain_data
finetune "$model" "$model" brain_train/segmentation \
  --epochs "${EPOCHS:-300}" --batch-size "$batch" --lr "$lr" --patience 60 --augment standard
package "$model" brain_test/segmentation --check-fraction 0.2
