#!/usr/bin/env bash
# Every demo checkpoint from scratch: the datasets first, then the training scripts side by side (one process
# each; on one GPU they share it), logs in $WORK/logs. JOBS picks a subset, e.g. JOBS="crossvit daft".
# Jobs: transfuse crossvit smca detr (the SMCA ablation) swin_unetr unetr vosht truenet unet daft resnet3d
# Usage: bash scripts/demo/train_all.sh           (meant for a GPU machine; then smca_vs_detr.py for the plot)
source "$(dirname "$0")/common.sh"
JOBS=${JOBS:-transfuse crossvit smca detr swin_unetr unetr vosht truenet unet daft resnet3d}
here=scripts/demo
mkdir -p "$WORK/logs"
needs() { case " $JOBS " in *" $1 "*) return 0 ;; esac; return 1; }
{ needs transfuse && endo_small; } &
{ { needs crossvit || needs smca || needs detr; } && endo_large; } &
{ { needs swin_unetr || needs unetr || needs vosht || needs truenet || needs unet; } && brain_data; } &
{ { needs daft || needs resnet3d; } && dementia_data; } &
wait
echo "data ready: $(ls "$WORK" | tr '\n' ' ')"
for job in $JOBS; do
  case $job in
    transfuse|crossvit|smca) cmd=(bash "$here/train_$job.sh") ;;
    detr) cmd=(env GAUSSIAN=false bash "$here/train_smca.sh") ;;
    swin_unetr|unetr|vosht|truenet|unet) cmd=(bash "$here/train_brain.sh" "${job}_demo") ;;
    daft|resnet3d) cmd=(env MODELS="$job" bash "$here/train_daft.sh") ;;
    *) echo "unknown job $job" >&2; exit 2 ;;
  esac
  "${cmd[@]}" >"$WORK/logs/$job.log" 2>&1 &
  echo "started $job (pid $!)"
done
failed=0
while [ -n "$(jobs -r)" ]; do wait -n || failed=$((failed + 1)); done
for job in $JOBS; do echo "== $job: $(tail -1 "$WORK/logs/$job.log")"; done
[ "$failed" -eq 0 ] || { echo "$failed job(s) failed; see $WORK/logs" >&2; exit 1; }
