"""The codec issue's acceptance: score codec checkpoints' round trips on held-out lines.

    .venv/bin/python bench/codec_acceptance.py --root data/synth_codec OUTPUT/codec/codec-*.pt \
        [--split test] [--bandwidth 6] [--out outputs/codec_acceptance]

For each checkpoint (e.g. the exports at 5, 15, 30, 45 training minutes of
``python train.py experiment=codec_demo``) it round-trips every line of the split (encode ->
tokens at --bandwidth -> decode), then prints and writes (``OUT/summary.json``, ``OUT/summary.md``)
Whisper tiny.en CER on the English lines (and of the originals), resemblyzer SIM to the original,
ILD / ITD sign agreement on lines > 22.5 degrees off the median plane, corrected ILD / IPD MAE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = [
    ("cer", "CER"),
    ("cer_original", "CER orig"),
    ("sim", "SIM"),
    ("ild_sign_agreement", "ILD sign"),
    ("itd_sign_agreement", "ITD sign"),
    ("ild_mae_db", "ILD MAE dB"),
    ("ipd_mae_rad", "IPD MAE"),
    ("broadband_ild_error_db", "bb ILD err dB"),
    ("ild_sign_vs_pose_round_trip", "ILD sign vs pose"),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="codec checkpoints (codec.checkpoint files)")
    parser.add_argument("--root", type=Path, required=True, help="dataset root with splits.json")
    parser.add_argument("--split", default="test")
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--limit", type=int, default=None, help="at most this many lines")
    parser.add_argument("--out", type=Path, default=Path("outputs/codec_acceptance"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from isdrama.codec.roundtrip_eval import evaluate_round_trip
    from isdrama.utils.io import atomic_write_json, atomic_write_text

    rows = []
    for i, ckpt in enumerate(args.checkpoints):
        out = args.out / ckpt.stem
        config = {"model": "encodec_24khz", "bandwidth": args.bandwidth, "checkpoint": str(ckpt)}
        report = evaluate_round_trip(
            config, args.root, out, split=args.split, limit=args.limit, cer_on_original=i == 0, progress=not args.quiet
        )
        minutes = torch.load(ckpt, map_location="cpu", weights_only=True).get("extra", {}).get("train_minutes")
        row = {"checkpoint": str(ckpt), "train_minutes": minutes, **report.summary}
        if i > 0:  # the originals' CER does not depend on the codec: transcribed once
            row["cer_original"] = rows[0]["cer_original"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    header = "| checkpoint | train min | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for r in rows:
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else "-" for k, _ in COLUMNS]
        tm = f"{r['train_minutes']:.1f}" if r.get("train_minutes") is not None else "-"
        lines.append(f"| {Path(r['checkpoint']).name} | {tm} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    atomic_write_json(args.out / "summary.json", rows)
    atomic_write_text(args.out / "summary.md", table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
