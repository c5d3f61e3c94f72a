"""`isdrama-eval GT_DIR INFER_DIR`: the seven ISDrama metrics over paired binaural files.

    isdrama-eval gt/ infer/ --out report/                           # corrected mode (default)
    isdrama-eval gt/ infer/ --mode reference --spatial-ast-checkpoint finetuned.pth
    isdrama-eval gt/ infer/ --metrics ipd,ild --out report/         # spatial cues only
    isdrama-eval gt/ infer/ --splits data/synth_demo                 # refuse lines outside the test split

Files pair by name (gt/NAME.wav <-> infer/NAME.wav; names and counts must match). Writes
results.json, per_file.csv, summary.csv, report.md and PNG plots to --out. Metrics whose model
is unavailable are listed as skipped with the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    from isdrama.metrics.pipeline import ALL_METRICS

    p = argparse.ArgumentParser(
        prog="isdrama-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("gt_dir", type=Path, help="ground-truth binaural wavs")
    p.add_argument("infer_dir", type=Path, help="generated binaural wavs (same names)")
    p.add_argument("--out", type=Path, default=Path("eval_report"), help="report folder (default eval_report)")
    p.add_argument(
        "--metrics",
        default=",".join(ALL_METRICS),
        help=f"comma-separated subset of {','.join(ALL_METRICS)} (default all)",
    )
    p.add_argument(
        "--mode",
        choices=["corrected", "reference"],
        default="corrected",
        help="corrected (default): wrapped phase, per-frame mean, no clip-length dependence; "
        "reference: the published script's computation and units",
    )
    p.add_argument(
        "--spatial-ast-checkpoint",
        type=Path,
        default=None,
        help="BAT's finetuned SpatialAST checkpoint (needed for ANG/DIS Cos)",
    )
    p.add_argument(
        "--segment-seconds",
        type=float,
        default=None,
        help="ANG/DIS per segment of this length (the paper's 1 s variant); default one per file",
    )
    p.add_argument(
        "--phase-wrap-quirk",
        choices=["auto", "on", "off"],
        default="auto",
        help="published phase-wrap of SpatialAST tokens (auto: on in reference mode only)",
    )
    p.add_argument("--prompt-dir", type=Path, default=None, help="speaker prompt per name (SIM to prompt)")
    p.add_argument(
        "--texts",
        type=Path,
        default=None,
        help="reference transcripts: JSON {name: text} or a folder of NAME.txt (CER)",
    )
    p.add_argument("--lang", default="auto", choices=["auto", "zh", "en"], help="CER text normalisation")
    p.add_argument("--asr-backend", default="faster_whisper", choices=["faster_whisper", "whisper_hf", "paraformer"])
    p.add_argument(
        "--asr-model",
        default=None,
        help="ASR model folder or hub id (default: the offline Whisper tiny.en for faster_whisper)",
    )
    p.add_argument("--speaker-backend", default="resemblyzer", choices=["resemblyzer", "wavlm"])
    p.add_argument("--speaker-model", default=None, help="speaker model folder or hub id (wavlm)")
    p.add_argument("--pitch-tracker", default="praat", choices=["praat", "crepe"], help="FFE pitch tracker")
    p.add_argument("--device", default="cpu", help="torch device for the models (cpu, cuda)")
    p.add_argument("--batch-size", type=int, default=8, help="files per batch (SpatialAST, IPD/ILD)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="CPU: IPD/ILD pairs computed at once, one thread each (default: torch's threads)",
    )
    p.add_argument(
        "--splits",
        type=Path,
        default=None,
        help="dataset root or splits.json: every gt file must be a line of a drama in --split "
        "(names as isdrama-data resynth writes them: set__drama__line); the report records it",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["train", "val", "test"],
        help="the split --splits checks the gt files against (default test)",
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace):
    from isdrama.metrics.pipeline import EvalConfig
    from isdrama.metrics.spatial import SpatialMAEConfig
    from isdrama.metrics.spatial_ast import SpatialASTMetricConfig
    from isdrama.metrics.speech import AsrConfig, FfeConfig, PitchConfig, SpeakerConfig, SpeechMetricsConfig

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    asr = AsrConfig(backend=args.asr_backend, device=args.device)
    if args.asr_model:
        asr.model = args.asr_model
    speaker = SpeakerConfig(backend=args.speaker_backend, device=args.device)
    if args.speaker_model:
        speaker.model = args.speaker_model
    quirk = {"auto": None, "on": True, "off": False}[args.phase_wrap_quirk]
    return EvalConfig(
        metrics=metrics,
        mode=args.mode,
        spatial_ast_checkpoint=str(args.spatial_ast_checkpoint) if args.spatial_ast_checkpoint else None,
        spatial=SpatialMAEConfig(device=args.device, batch_size=args.batch_size, workers=args.workers),
        spatial_ast=SpatialASTMetricConfig(
            phase_wrap_quirk=quirk, segment_seconds=args.segment_seconds, batch_size=args.batch_size, device=args.device
        ),
        speech=SpeechMetricsConfig(
            lang=args.lang, asr=asr, speaker=speaker, ffe=FfeConfig(pitch=PitchConfig(tracker=args.pitch_tracker))
        ),
        progress=not args.quiet,
    )


def check_split(pairs, splits: Optional[Path], split: str) -> dict[str, str]:
    """With a split file (or a dataset root holding one): raise unless every pair's name is a line of
    a drama in ``split``; returns the report settings that record the check ({} without one)."""
    if splits is None:
        return {}
    from isdrama.data.splits import load_splits

    loaded = load_splits(splits)
    loaded.check_names([p.name for p in pairs], split)
    return {"splits": str(loaded.path), "split": split, "splits_digest": loaded.digest[:12]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from isdrama.data.schema import DataError
    from isdrama.metrics.pairing import PairingError, pair_folders
    from isdrama.metrics.pipeline import evaluate_pairs, load_texts
    from isdrama.metrics.report import write_report

    try:
        cfg = config_from_args(args)
        texts = load_texts(args.texts, args.gt_dir)
        pairs = pair_folders(args.gt_dir, args.infer_dir, prompt_dir=args.prompt_dir, texts=texts)
        split_settings = check_split(pairs, args.splits, args.split)
        result = evaluate_pairs(pairs, cfg)
        result.settings.update(split_settings)
    except (PairingError, DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = write_report(result, args.out, plots=not args.no_plots)
    print(result.markdown())
    print(f"report: {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
