"""How much left/right information each pose modality of a synthetic set can carry at most.

    .venv/bin/python bench/pose_probe_ceilings.py [--root data/synth_pose] [--features]

Uses the validation split of `experiment=pose_pretrain` (same split seed and fractions) and the
probe labels of isdrama.lit.probes (mean-x sign; the margin variant leaves out lines within 22.5
degrees of the median plane).

- video without talker detection: the video shows every speaker of the drama; a model that
  localises all figures but cannot tell which one talks can only be sure when all of them are
  on the same side (a walking talker is the only one moving, so dynamic lines count as solved);
  otherwise it takes the majority side (a tie scores 0.5).
- text word rule: the prompt names "left" or "right" (one of the two) -> that side; otherwise 0.5.
- ``--features``: a logistic probe on the frozen tiny video backbone's features (time mean and
  std per line), fitted on the train split (what the video branch could read linearly).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def compose(root: str | None):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    overrides = ["experiment=pose_pretrain", "logger=none"] + ([f"data.root={root}"] if root else [])
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return hcompose("train", overrides=overrides)


def ceilings(lines, margin_deg: float) -> dict[str, float]:
    """Video (no talker detection) and text word-rule left/right ceilings over ``lines``."""
    by_drama: dict[str, list] = {}
    for line in lines:
        folder = Path(line.wav_path).parent.parent
        by_drama.setdefault(str(folder / f"{folder.name}.json"), []).append(line)
    wanted = {line.key for line in lines}
    video, text, defined = [], [], []
    for path in by_drama:
        items = json.loads(Path(path).read_text())
        folder = Path(path).parent
        poses = {it["item_name"]: np.load(folder / it["pos_fn"]) for it in items}
        speakers: dict[str, list] = {}
        for it in items:
            speakers.setdefault(it["speaker"], []).append(it)
        for it in items:
            if not any(k.endswith(it["item_name"]) for k in wanted):
                continue
            p = poses[it["item_name"]]
            mx, my = float(p[:, 0].mean()), float(p[:, 1].mean())
            moving = float(np.linalg.norm(np.diff(p[:, :3], axis=0), axis=1).sum()) >= 0.5
            sides = [mx > 0]
            for spk, its in speakers.items():
                if spk == it["speaker"]:
                    continue
                before = [o for o in its if o["end_time"] <= it["start_time"]]
                pos = poses[before[-1]["item_name"]][-1] if before else poses[its[0]["item_name"]][0]
                sides.append(pos[0] > 0)
            agree = np.mean([s == sides[0] for s in sides])
            video.append(1.0 if moving or agree > 0.5 else (0.5 if agree == 0.5 else 0.0))
            prompt = (it.get("spatial_prompt") or "").lower()
            left, right = "left" in prompt, "right" in prompt
            text.append(0.5 if left == right else float(right == (mx > 0)))
            defined.append(np.degrees(np.arctan2(abs(mx), abs(my))) > margin_deg)
    v, t, d = np.array(video), np.array(text), np.array(defined)
    return {
        "lines": len(v),
        "video_all": v.mean(),
        "video_margin": v[d].mean(),
        "text_all": t.mean(),
        "text_margin": t[d].mean(),
    }


def feature_probe(cfg) -> dict[str, float]:
    import torch
    from hydra.utils import instantiate

    from isdrama.lit.probes import LabelConfig, pose_labels, probe_accuracy
    from isdrama.models.pose_encoder import VideoFrameEncoder

    dm = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    dm.setup()
    pe = cfg.model.pose_encoder
    torch.manual_seed(cfg.seed)
    enc = VideoFrameEncoder(pe.video_backbone, pe.video_pretrained, pe.video_image_size, True, pe.video_batch)
    res = {}
    for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader())):
        xs, ys = [], {}
        for b in loader:
            with torch.no_grad():
                f = enc(b.video, b.video_mask)
            m = b.video_mask[..., None].float()
            mean = (f * m).sum(1) / m.sum(1)
            std = ((f - mean[:, None]) ** 2 * m).sum(1).div(m.sum(1)).sqrt()
            xs.append(torch.cat([mean, std], -1))
            for k, v in pose_labels(b.pose, b.mask, LabelConfig()).items():
                ys.setdefault(k, []).append(v)
        res[split] = (torch.cat(xs), {k: torch.cat(v) for k, v in ys.items()})
    return {
        task: probe_accuracy(res["train"][0], res["train"][1][task], res["val"][0], res["val"][1][task], 2)
        for task in ("left_right", "left_right_all", "moving")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="dataset root (default: the experiment's data.root)")
    parser.add_argument("--features", action="store_true", help="also probe the frozen video features")
    args = parser.parse_args()
    cfg = compose(args.root)
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    dm.setup()
    margin = cfg.model.probes.labels.lateral_margin_deg
    c = ceilings(dm.datasets["val"].lines, margin)
    print(f"validation lines: {c['lines']}")
    print(
        f"left/right ceiling, video without talker detection: all {100 * c['video_all']:.1f} %, "
        f"margin {100 * c['video_margin']:.1f} %"
    )
    print(f"left/right, text word rule: all {100 * c['text_all']:.1f} %, margin {100 * c['text_margin']:.1f} %")
    if args.features:
        for task, acc in feature_probe(cfg).items():
            print(f"frozen video features (mean+std), linear probe {task}: {100 * acc:.1f} %")


if __name__ == "__main__":
    main()
