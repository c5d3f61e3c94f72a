"""The drama stage's acceptance: spatial control, speaker and content of generated held-out lines.

    .venv/bin/python bench/drama_acceptance.py CKPT [--split test] [--out outputs/drama_acceptance] \
        -- experiment=drama_demo codec.checkpoint=OUTPUT/codec/codec-last.pt

CKPT: a drama-stage Lightning checkpoint (``OUTPUT/checkpoints/last.ckpt``) or its export
(``OUTPUT/drama/drama-last.pt``); the EMA weights are used. The overrides after ``--`` compose the
same config the run was trained with (they name the data and the codec); ``--pose-branch`` scores
one pose mode (geo / video / text). Prints and writes ``OUT/report.json``: the share of lateral lines whose
generated broadband ILD sign matches the pose and flips with the pose mirrored, the share of
lines whose SIM to their own prompt beats every other speaker's prompt, and Whisper CER on the
English lines beside the codec round trip's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="drama-stage Lightning checkpoint or export")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", type=Path, default=Path("outputs/drama_acceptance"))
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: model.validation's")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: model.validation's)")
    parser.add_argument(
        "--sway",
        default=None,
        help="sway coefficient of the Euler time grid, 'none' = uniform (default: model.flow's)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--pose-branch",
        default=None,
        choices=["geo", "video", "text"],
        help="z_p from this front-end branch only (default: every branch the data has, fused)",
    )
    parser.add_argument(
        "--uncond",
        default="model",
        choices=["model", "prompt", "prompt_content"],
        help="guidance's unconditional branch: as the model was trained (model.prompt.content_drop, "
        "drop_pose_with_content), without the prompt only (the paper's), or without prompt and content "
        "(and the pose, for a model trained to drop it with the content)",
    )
    parser.add_argument(
        "--content-guidance-scale",
        type=float,
        default=None,
        help="g_c, the content's guidance scale (a model with --uncond prompt_content; default: model.flow's)",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    if args.threads:
        torch.set_num_threads(args.threads)
    from isdrama.inference.drama_eval import evaluate_generation
    from isdrama.lit.drama import DramaModule

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    datamodule = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup()
    module, _ = DramaModule.load_for_inference(args.checkpoint)  # the EMA weights
    module.set_codec(datamodule.token_loader.codec)
    module.eval()
    if args.sway is not None:
        for net in (module.net, module.ema_net):
            net.flow.config.sway = None if args.sway.lower() == "none" else float(args.sway)
    loader = {
        "train": datamodule.train_dataloader,
        "val": datamodule.val_dataloader,
        "test": datamodule.test_dataloader,
    }
    report = evaluate_generation(
        module,
        loader[args.split](),
        out=args.out,
        max_batches=args.max_batches,
        guidance_scale=args.guidance_scale,
        steps=args.steps,
        progress=not args.quiet,
        pose_branches=[args.pose_branch] if args.pose_branch else None,
        drop_content=None if args.uncond == "model" else args.uncond == "prompt_content",
        content_guidance_scale=args.content_guidance_scale,
    )
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
