"""The drama stage's acceptance on held-out lines: spatial control, speaker and content.

For every line of a split (the drama module's own generation: ground-truth durations, the
line's speaker prompt from another line of the same speaker, CFG, EMA weights):

- spatial control: lines more than ``margin_deg`` off the median plane (side from the pose, as the
  pose-encoder probes label it); the generated audio's broadband ILD sign must match the pose's
  side, and, generated again with the pose mirrored (x -> -x, :func:`mirror_pose`), flip;
- speaker: SIM(generated, own prompt) > SIM(generated, every other speaker's prompt) (resemblyzer;
  one prompt per other speaker: the first prompt of that speaker in the split);
- content: Whisper tiny.en CER on the English lines, beside the codec round trip's CER of the
  same lines (the decoded ground-truth tokens: the ceiling of any generator in this latent space).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from isdrama.data.schema import POSE_COLUMNS

log = logging.getLogger(__name__)


def mirror_pose(pose: torch.Tensor) -> torch.Tensor:
    """The pose (..., 9) mirrored left <-> right: x -> -x, the head rotation reflected
    (qw, qx, qy, qz) -> (qw, qx, -qy, -qz), the radial velocities of the two ears swapped."""
    if pose.shape[-1] != len(POSE_COLUMNS):
        raise ValueError(f"pose must have {len(POSE_COLUMNS)} columns {POSE_COLUMNS}, got {tuple(pose.shape)}")
    out = pose.clone()
    col = {c: i for i, c in enumerate(POSE_COLUMNS)}
    for name in ("x", "qy", "qz"):
        out[..., col[name]] = -pose[..., col[name]]
    out[..., col["v_rad_left"]] = pose[..., col["v_rad_right"]]
    out[..., col["v_rad_right"]] = pose[..., col["v_rad_left"]]
    return out


def _signs(values) -> np.ndarray:
    return np.sign(np.asarray(values, dtype=np.float64))


@torch.no_grad()
def evaluate_generation(
    module,
    loader,
    out: Optional[Path] = None,
    margin_deg: float = 22.5,
    cer_language: str = "en",
    max_batches: Optional[int] = None,
    guidance_scale: Optional[float] = None,
    steps: Optional[int] = None,
    save_audio: int = 4,
    progress: bool = True,
    pose_branches: Optional[Sequence[str]] = None,
    drop_content: Optional[bool] = None,
    content_guidance_scale: Optional[float] = None,
) -> dict[str, Any]:
    """Score a :class:`~isdrama.lit.drama.DramaModule` (with its codec set) on a loader of
    DramaBatches. Returns ``{"summary": ..., "per_line": ...}`` (and writes ``out/report.json``
    and the first ``save_audio`` lines' wavs when ``out`` is given). ``pose_branches``: z_p from
    these front-end branches only (e.g. ``["text"]``; default every branch the batch has); the
    mirrored-pose check runs when the geometric branch is among them. ``drop_content``: guidance's
    unconditional branch without the content too (default: as the model was trained);
    ``content_guidance_scale``: its g_c (default: the model's ``model.flow.content_guidance_scale``)."""
    from tqdm.auto import tqdm

    from isdrama.data.audio import write_audio
    from isdrama.inference.line_generator import decode_latents
    from isdrama.metrics.interaural import broadband_ild_db, lateral_side
    from isdrama.metrics.speech import SpeechItem, SpeechMetrics, SpeechMetricsConfig
    from isdrama.metrics.speech.speaker import SpeakerConfig, build_speaker_encoder, cosine
    from isdrama.utils.io import atomic_write_json

    cer_suite = SpeechMetrics(SpeechMetricsConfig(metrics=("cer",), lang=cer_language, cer_on_gt=True))
    if "cer" in cer_suite.unavailable:
        raise RuntimeError(f"cer is unavailable: {cer_suite.unavailable['cer']}")
    speaker = build_speaker_encoder(SpeakerConfig())
    codec = module.codec
    sr = codec.sample_rate
    hop = codec.hop_length
    rows: dict[str, dict[str, Any]] = {}
    prompts_by_speaker: dict[str, np.ndarray] = {}
    gen_embedding: dict[str, np.ndarray] = {}  # (1, D) speaker embedding of each generated line
    saved = 0
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    batches = list(loader) if max_batches is None else [b for _, b in zip(range(max_batches), loader)]
    mirror = pose_branches is None or "geo" in pose_branches
    for batch in tqdm(batches, desc="drama acceptance", unit="batch", disable=not progress):
        batch = batch.to(module.device)
        if batch.pose is None:
            raise ValueError("the acceptance needs the geometric pose of every line (data.items.load_pose)")
        kwargs = {
            "guidance_scale": guidance_scale,
            "steps": steps,
            "pose_branches": pose_branches,
            "drop_content": drop_content,
            "content_guidance_scale": content_guidance_scale,
        }
        wav = decode_latents(codec, module.generate_latents(batch, **kwargs))
        wav_m = None
        if mirror:
            mirrored = _with_pose(batch, mirror_pose(batch.pose))
            wav_m = decode_latents(codec, module.generate_latents(mirrored, **kwargs))
        gt = codec.decode(batch.tokens)
        prompt = codec.decode(batch.prompt_tokens) if batch.prompt_tokens is not None else None
        for i, key in enumerate(batch.keys):
            n = int(batch.frames[i]) * hop
            g, r = (w[i, :, :n].cpu().numpy() for w in (wav, gt))
            gm = wav_m[i, :, :n].cpu().numpy() if wav_m is not None else None
            pose = batch.pose[i, : int(batch.frames[i])].cpu().numpy()
            spk = batch.speakers[int(batch.speaker_ids[i])]
            row = {
                "speaker": spk,
                "language": batch.languages[i],
                "side": lateral_side(pose, margin_deg),
                "ild_gen_db": broadband_ild_db(g),
                "ild_mirrored_db": broadband_ild_db(gm) if gm is not None else None,
                "ild_round_trip_db": broadband_ild_db(r),
            }
            if prompt is not None and bool(batch.prompt_mask[i].any()):
                p = prompt[i, :, : int(batch.prompt_mask[i].sum()) * hop].mean(0).cpu().numpy()
                row["has_prompt"] = True
                prompts_by_speaker.setdefault(spk, p)
                emb = speaker.embed([g.mean(0), p], sr)
                row["sim_own_prompt"] = float(cosine(emb[0:1], emb[1:2])[0])
                gen_embedding[key] = emb[0:1]
            if batch.languages[i] == cer_language:
                scored = cer_suite.score([SpeechItem(key, g, sr, gt=r, gt_sr=sr, text=batch.texts[i])])[0]
                row.update(
                    cer=scored.get("cer"), cer_round_trip=scored.get("gt_cer"), transcript=scored.get("transcript")
                )
            rows[key] = row
            if out is not None and saved < save_audio:
                for tag, audio in (("gen", g), ("mirrored", gm), ("round_trip", r)):
                    if audio is None:
                        continue
                    write_audio(Path(out) / f"{key.replace('/', '_')}.{tag}.wav", audio, sr, subtype="FLOAT")
                saved += 1

    # speaker ranking: own prompt vs one prompt of every other speaker
    speakers = sorted(prompts_by_speaker)
    if len(speakers) > 1:
        bank = speaker.embed([prompts_by_speaker[s] for s in speakers], sr)
        for key, row in rows.items():
            if not row.get("has_prompt"):
                continue
            sims = cosine(np.repeat(gen_embedding[key], len(speakers), axis=0), bank)
            others = [float(s) for s, name in zip(sims, speakers) if name != row["speaker"]]
            row["sim_best_other"] = max(others)
            row["speaker_ranked_first"] = bool(row["sim_own_prompt"] > max(others))

    lateral = [r for r in rows.values() if r["side"] is not None]
    s: dict[str, Any] = {
        "lines": len(rows),
        "lateral_lines": len(lateral),
        "speakers": len(speakers),
        "pose_branches": list(pose_branches) if pose_branches else "all",
    }
    if lateral:
        side = np.asarray([r["side"] for r in lateral], dtype=np.float64)
        s["ild_sign_matches_pose"] = float((_signs([r["ild_gen_db"] for r in lateral]) == side).mean())
        if mirror:
            s["ild_sign_flips_mirrored"] = float((_signs([r["ild_mirrored_db"] for r in lateral]) == -side).mean())
        s["ild_sign_round_trip_matches_pose"] = float(
            (_signs([r["ild_round_trip_db"] for r in lateral]) == side).mean()
        )
        s["mean_abs_ild_gen_db"] = float(np.mean([abs(r["ild_gen_db"]) for r in lateral]))
        s["mean_abs_ild_round_trip_db"] = float(np.mean([abs(r["ild_round_trip_db"]) for r in lateral]))
    ranked = [r["speaker_ranked_first"] for r in rows.values() if "speaker_ranked_first" in r]
    if ranked:
        s["speaker_ranked_first"] = float(np.mean(ranked))
        s["speaker_lines"] = len(ranked)
        s["sim_own_prompt"] = float(np.mean([r["sim_own_prompt"] for r in rows.values() if "sim_own_prompt" in r]))
    cers = [r for r in rows.values() if r.get("cer") is not None]
    if cers:
        s["cer"] = float(np.mean([r["cer"] for r in cers]))
        s["cer_round_trip"] = float(np.mean([r["cer_round_trip"] for r in cers if r.get("cer_round_trip") is not None]))
        s["english_lines"] = len(cers)
    report = {"summary": s, "per_line": rows}
    if out is not None:
        atomic_write_json(Path(out) / "report.json", json.loads(json.dumps(report, default=float)))
    return report


def _with_pose(batch, pose: torch.Tensor):
    import copy

    other = copy.copy(batch)
    other.pose = pose
    return other


__all__ = ["evaluate_generation", "mirror_pose"]
