#!/usr/bin/env bash
# The main job, end to end on CPU (called by `make demo` after scripts/setup.sh): a binaural drama
# from a hand-written three-speaker script with the demo checkpoints, and its evaluation.
#   1 synthetic MRSDrama (24 dramas; their test split is held out from the demo model's training too)
#   2 check
#   3 the demo checkpoints (checkpoints/demo: codec + drama model, committed; `make demo-train`
#     retrains them with the project's training commands)
#   4 infer.py on examples/three_speakers.yaml (trajectory, pose-file, text and video pose prompts)
#     -> drama.wav, lines/, manifest.json, report.md
#   5 held-out test lines generated from their geometric pose and by the cascade baseline,
#     scored by isdrama-eval -> one table
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" WANDB_MODE="${WANDB_MODE:-offline}"
BIN=.venv/bin
DATA="${DEMO_DATA:-data/synth_demo}"
OUT="${DEMO_OUT:-outputs/demo}"
CKPT="${DEMO_CHECKPOINTS:-checkpoints/demo}"
SCRIPT="${DEMO_SCRIPT:-examples/three_speakers.yaml}"
LINES="${DEMO_EVAL_LINES:-8}"

echo "== 1/5 synthetic dataset: $DATA"
$BIN/isdrama-data synth "$DATA" --dramas "${DEMO_DRAMAS:-24}" --seed 0 --workers 2
echo "== 2/5 check"
$BIN/isdrama-data check "$DATA" --quiet
echo "== 3/5 demo checkpoints: $CKPT"
for f in drama.pt codec.pt; do
  [ -f "$CKPT/$f" ] || { echo "missing $CKPT/$f: run 'make demo-train' (see $CKPT/README.md)" >&2; exit 1; }
done
echo "== 4/5 infer.py script=$SCRIPT"
$BIN/python infer.py script="$SCRIPT" checkpoint="$CKPT/drama.pt" out="$OUT/drama" hydra.run.dir="$OUT/infer_log"
echo "== 5/5 $LINES held-out test lines: drama model (geometric pose) and cascade baseline -> isdrama-eval"
$BIN/isdrama-infer table "$DATA" "$OUT/eval" --modes geo cascade --limit "$LINES" --checkpoint "$CKPT/drama.pt" --quiet
echo
echo "demo outputs: $OUT/drama/drama.wav (the drama), $OUT/drama/report.md, $OUT/eval/table.md"
