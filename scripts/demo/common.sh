# Sourced by the train_*.sh scripts: where things go, and the synthetic datasets they share.
#   MEDVIT   the CLI (default .venv/bin/medvit)       WORK     scratch folder (default build/demo)
#   DEVICE   auto | cpu | cuda (default auto)          WORKERS  processes for `medvit synth` (default: all cores)
#   CKPT     where the demo weights go (default sample_data/checkpoints)
#   MAX_MINUTES  optional time budget per fine-tuning run (recorded in the manifest when it stops a run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
MEDVIT=${MEDVIT:-.venv/bin/medvit}
WORK=${WORK:-build/demo}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-$(nproc)}
CKPT=${CKPT:-sample_data/checkpoints}
BUDGET=()
[ -n "${MAX_MINUTES:-}" ] && BUDGET=(--max-minutes "$MAX_MINUTES")

# synth KIND NAME N SEED [options]: the dataset once; a half-written folder (no synth.json yet) is made again
synth() {
  local kind=$1 name=$2 n=$3 seed=$4
  shift 4
  if [ ! -f "$WORK/$name/synth.json" ]; then
    rm -rf "${WORK:?}/$name"
    $MEDVIT synth "$kind" --out "$WORK/$name" --n "$n" --seed "$seed" --workers "$WORKERS" "$@" >/dev/null
  fi
}

# the datasets (training seed 0 or 2, held-out test seed 1)
endo_small() { synth endoscopy endo_train 320 0 --shape 192 256; synth endoscopy endo_test 64 1 --shape 192 256; }
endo_large() { synth endoscopy endo_large 1200 2 --shape 192 256; synth endoscopy endo_test 64 1 --shape 192 256; }
brain_data() { synth brain brain_train 60 0; synth brain brain_test 20 1; }
dementia_data() { synth dementia dementia_train 400 0; synth dementia dementia_test 200 1; }
all_data() { endo_small; endo_large; brain_data; dementia_data; }

# finetune NAME MODEL DATASET [finetune options]: a fresh run (RESUME=1 continues an interrupted one; a rerun
# over an existing run folder starts afresh there, its promoted versions kept)
finetune() {
  local name=$1 model=$2 data=$3
  shift 3
  $MEDVIT finetune "$WORK/$data" --model "$model" --out "$WORK/runs/$name" --device "$DEVICE" --seed 0 \
    $([ -n "${RESUME:-}" ] && echo --resume || echo --overwrite) "${BUDGET[@]}" "$@"
}

# package NAME TEST [options]: the run's active version -> $CKPT/NAME.safetensors (fp16, test metric in the manifest;
# replaces the shipped file: that is what regenerating means)
package() {
  local name=$1 test=$2
  shift 2
  mkdir -p "$CKPT"
  $MEDVIT package "$WORK/runs/$name" --test "$WORK/$test" --to "$CKPT/$name.safetensors" --overwrite --device "$DEVICE" "$@" | tail -1
}
