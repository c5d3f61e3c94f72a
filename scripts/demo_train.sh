#!/usr/bin/env bash
# Retrain the demo checkpoints (checkpoints/demo) from scratch with the project's own training
# commands (called by `make demo-train`; 2 h 14 min on 2 cores measured as one command, see README):
#   1 codec: experiment=codec_demo (45 min of training; generates data/synth_codec on first use)
#   2 data/synth_drama: the same 240 dramas (seed 0) with their videos
#   3 front end: experiment=pose_pretrain_drama (~14 min)
#   4 drama model: experiment=drama_demo on that codec and front end (40 min)
#   5 pack both, half precision, into checkpoints/demo (isdrama-infer pack)
# Seeds: every run uses the configs' seed (12345) and the data seed 0. Runs go to $OUT/<stage>.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" WANDB_MODE="${WANDB_MODE:-offline}"
BIN=.venv/bin
OUT="${DEMO_TRAIN_OUT:-outputs/demo_train}"
CKPT="${DEMO_CHECKPOINTS:-checkpoints/demo}"
START=$(date +%s)
stamp() { echo "[demo-train] $1 done after $(( ($(date +%s) - START) / 60 )) min"; }

$BIN/python train.py experiment=codec_demo logger=csv trainer.enable_progress_bar=false hydra.run.dir="$OUT/codec"
stamp "1/5 codec"
$BIN/isdrama-data synth data/synth_drama --dramas 240 --seed 0 --workers 2 --quiet
stamp "2/5 synthetic dramas with video"
$BIN/python train.py experiment=pose_pretrain_drama logger=csv trainer.enable_progress_bar=false hydra.run.dir="$OUT/pose"
stamp "3/5 front end"
$BIN/python train.py experiment=drama_demo codec.checkpoint="$OUT/codec/codec/codec-45min.pt" \
  model.frontend.checkpoint="$OUT/pose/checkpoints/last.ckpt" logger=csv trainer.enable_progress_bar=false \
  hydra.run.dir="$OUT/drama"
stamp "4/5 drama model"
$BIN/isdrama-infer pack --drama "$OUT/drama/drama/drama-last.pt" --codec "$OUT/codec/codec/codec-45min.pt" --out "$CKPT"
stamp "5/5 packed into $CKPT"
