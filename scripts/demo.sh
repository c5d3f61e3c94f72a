#!/usr/bin/env bash
# The main job, end to end on CPU (called by `make demo` after scripts/setup.sh):
# synthetic MRSDrama -> check -> EnCodec tokens -> pose-encoder training -> codec resynthesis -> evaluation.
# Every step is resumable: a rerun reuses the dataset, the token cache and the k-means codec.
# The drama split is $DATA/splits.json (written by synth); training, resynth and eval all read it,
# so no fractions are passed here.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" WANDB_MODE="${WANDB_MODE:-offline}"
BIN=.venv/bin
DATA="${DEMO_DATA:-data/synth_demo}"
OUT="${DEMO_OUT:-outputs/demo}"
DRAMAS="${DEMO_DRAMAS:-24}"

echo "== 1/5 synthetic dataset: $DATA ($DRAMAS dramas)"
$BIN/isdrama-data synth "$DATA" --dramas "$DRAMAS" --seed 0 --workers 2
echo "== 2/5 check"
$BIN/isdrama-data check "$DATA" --quiet
echo "== 3/5 EnCodec tokens"
$BIN/isdrama-data tokenize "$DATA" --kmeans-init "${DEMO_KMEANS_SECONDS:-90}"
echo "== 4/5 pose-encoder training (experiment=demo)"
$BIN/python train.py experiment=demo data.root="$DATA" hydra.run.dir="$OUT/train"
echo "== 5/5 codec resynthesis of the test split + evaluation"
$BIN/isdrama-data resynth "$DATA" "$OUT/resynth" --split test --limit 12 --quiet
$BIN/isdrama-eval "$OUT/resynth/gt" "$OUT/resynth/infer" --prompt-dir "$OUT/resynth/prompt" \
  --texts "$OUT/resynth/texts.json" --splits "$DATA" --split test --out "$OUT/eval"
echo
cat "$OUT/eval/report.md"
echo "demo outputs: $OUT (training logs in $OUT/train, report in $OUT/eval)"
