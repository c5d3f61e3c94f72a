"""Pose-encoder acceptance: run `train.py experiment=pose_pretrain` (CSV logger), time it, and print
the probe / retrieval table of the last validation against the targets.

    .venv/bin/python bench/pose_pretrain_acceptance.py                  # train, then report
    .venv/bin/python bench/pose_pretrain_acceptance.py -- trainer.max_epochs=3   # extra overrides
    .venv/bin/python bench/pose_pretrain_acceptance.py --run-dir DIR    # report an existing run

The run directory (default logs/pose_pretrain/acceptance_<time>) receives the Hydra outputs,
metrics.csv and acceptance.md / acceptance.json. Targets (docs/benchmarks.md): left/right probe
>= 95 % from geo and >= 90 % from video and text; moving/static >= 90 % from every branch;
retrieval R@1 among 32 >= 5x chance for geo-video and geo-text.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BRANCHES = ("geo", "video", "text")
TASKS = ("left_right", "left_right_all", "front_back", "front_back_all", "moving", "distance")
PAIRS = ("geo-video", "geo-text", "video-text")
#: (metric, threshold) of the acceptance; R@1 thresholds are 5 x chance among 32.
TARGETS = {
    "val/probe/geo/left_right": 0.95,
    "val/probe/video/left_right": 0.90,
    "val/probe/text/left_right": 0.90,
    "val/probe/geo/moving": 0.90,
    "val/probe/video/moving": 0.90,
    "val/probe/text/moving": 0.90,
    "val/retrieval/geo-video/R@1": 5 / 32,
    "val/retrieval/geo-text/R@1": 5 / 32,
}


def last_validation(metrics_csv: Path) -> dict[str, float]:
    """The latest value of every val/ metric of the last validation that ran probes."""
    rows = list(csv.DictReader(metrics_csv.open()))
    probe_rows = [r for r in rows if any(k.startswith("val/probe/") and r[k] for k in r)]
    if not probe_rows:
        raise SystemExit(f"{metrics_csv}: no validation with probes was logged")
    step = probe_rows[-1]["step"]
    out: dict[str, float] = {}
    for r in rows:
        if r.get("step") != step:
            continue
        for k, v in r.items():
            if k.startswith("val/") and v != "":
                out[k] = float(v)
    out["epoch"] = float(probe_rows[-1]["epoch"])
    out["step"] = float(step)
    return out


def table(m: dict[str, float], wall_s: float | None) -> str:
    pct = lambda v: "n/a" if v is None or math.isnan(v) else f"{100 * v:.1f}"
    lines = [
        f"epoch {int(m['epoch'])}, step {int(m['step'])}"
        + (f", wall {wall_s / 60:.1f} min" if wall_s is not None else ""),
        "",
        "| probe accuracy (%) | " + " | ".join(BRANCHES) + " |",
        "|---|" + "---|" * len(BRANCHES),
    ]
    for task in TASKS:
        lines.append(f"| {task} | " + " | ".join(pct(m.get(f"val/probe/{b}/{task}")) for b in BRANCHES) + " |")
    cand = int(m.get("val/retrieval/candidates", 32))
    lines += ["", f"| retrieval among {cand} (%) | R@1 | R@5 | a->b R@1 | b->a R@1 |", "|---|---|---|---|---|"]
    for pair in PAIRS:
        a, b = pair.split("-")
        lines.append(
            f"| {pair} | {pct(m.get(f'val/retrieval/{pair}/R@1'))} | {pct(m.get(f'val/retrieval/{pair}/R@5'))}"
            f" | {pct(m.get(f'val/retrieval/{a}->{b}/R@1'))} | {pct(m.get(f'val/retrieval/{b}->{a}/R@1'))} |"
        )
    lines += [
        f"(chance R@1 = {100 / cand:.1f} %, R@5 = {500 / cand:.1f} %)",
        "",
        "| target | value | pass |",
        "|---|---|---|",
    ]
    for key, threshold in TARGETS.items():
        v = m.get(key)
        ok = v is not None and not math.isnan(v) and v >= threshold
        lines.append(f"| {key} >= {100 * threshold:.1f} | {pct(v)} | {'yes' if ok else 'NO'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, help="report this finished run (no training)")
    parser.add_argument("--out", type=Path, help="run directory for a new run")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    args = parser.parse_args()
    wall = None
    run_dir = args.run_dir
    if run_dir is None:
        run_dir = args.out or REPO / "logs" / "pose_pretrain" / time.strftime("acceptance_%Y-%m-%d_%H-%M-%S")
        cmd = [
            sys.executable,
            str(REPO / "train.py"),
            "experiment=pose_pretrain",
            "logger=csv",
            f"hydra.run.dir={run_dir}",
            *args.overrides,
        ]
        print("$", " ".join(cmd), flush=True)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
        }
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(f"training failed (exit {proc.returncode}) after {wall:.0f} s", file=sys.stderr)
            return proc.returncode
    metrics_csv = next(Path(run_dir).rglob("metrics.csv"), None)
    if metrics_csv is None:
        raise SystemExit(f"{run_dir}: no metrics.csv (run with logger=csv)")
    m = last_validation(metrics_csv)
    text = table(m, wall)
    print(text)
    (Path(run_dir) / "acceptance.md").write_text(text + "\n")
    (Path(run_dir) / "acceptance.json").write_text(json.dumps({"wall_s": wall, "metrics": m}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
