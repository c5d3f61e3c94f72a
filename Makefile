# Conventional entry points; each installs what it lacks first (scripts/setup.sh).
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: setup demo demo-train lint test test-slow test-portable bench
setup:
	@bash scripts/setup.sh

# a binaural drama from examples/three_speakers.yaml with the committed demo checkpoints (~4-5 min)
demo: setup
	@bash scripts/demo.sh

# retrain checkpoints/demo from scratch (codec, front end, drama model; ~1 h 45 min on 2 cores)
demo-train: setup
	@bash scripts/demo_train.sh

# ruff (configured in pyproject.toml): lint and format check; `ruff format .` fixes the format
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# the fast tests on other float kernels, as another CPU would run them: ATen's non-vectorised CPU
# kernels, oneDNN's and MKL's SSE4 kernels, one thread (other rounding and summation orders than
# the vector kernels and thread split picked here); a tolerance tighter than the arithmetic
# guarantees fails here
PORTABLE_ENV := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
test-portable: setup
	$(PORTABLE_ENV) $(PY) -m pytest -q

# the standalone benchmarks of docs/benchmarks.md (~20 min on 2 cores, most of it the published
# evaluation path the last one times isdrama-eval against); the data loader and the pose
# acceptance run need generated data, see there
bench: setup
	$(PY) bench/bench_synth.py --dramas 4
	$(PY) bench/bench_tokenize.py --batch-size 1
	$(PY) bench/bench_eval_spatial.py --pairs 100 --seconds 10 --repeats 2
