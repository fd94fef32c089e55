#!/usr/bin/env bash
# DAFT demo weights (image + tabular -> CN / MCI / Dementia) and its image-only baseline (resnet3d), trained the
# same way on the same synthetic subjects: DAFT's claim is that the tabular data helps (balanced accuracy).
# 400 subjects (seed 0; 300 train / 100 validation), held-out test: the 200 subjects of seed 1.
# Usage: bash scripts/demo/train_daft.sh          (~1 h on 2 CPU cores)
source "$(dirname "$0")/common.sh"
dementia_data
for model in ${MODELS:-daft resnet3d}; do
  finetune "$model" "$model" dementia_train/classification \
    --epochs "${EPOCHS:-150}" --batch-size 32 --patience 40 --augment standard
  package "$model" dementia_test/classification --check-fraction 0.1
done
