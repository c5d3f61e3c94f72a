"""Inference checkpoints: a drama model and its codec packed side by side (half precision), as
the committed demo checkpoints in checkpoints/demo/ are made (`isdrama-infer pack`).

    OUT/drama.pt     the drama export (EMA weights), float16, its codec recorded as codec.pt
    OUT/codec.pt     the codec checkpoint (isdrama-codec/1), float16, without the codebooks' EMA
                     sums (training only; refilled from embed x cluster_size on load)
    OUT/pack.json    the source files, their sha1, the sizes

Weights are stored in float16 and loaded into float32 modules (``load_state_dict`` casts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def _half(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.half() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in state.items()}


def pack_inference_checkpoints(
    drama: Path | str, codec: Path | str, out: Path | str, half: bool = True
) -> dict[str, Path]:
    """Write OUT/drama.pt, OUT/codec.pt and OUT/pack.json; returns their paths."""
    from isdrama.codec import BinauralCodec
    from isdrama.codec.weights import CHECKPOINT_FORMAT, strip_training_buffers
    from isdrama.data.cache import hash_file
    from isdrama.lit.drama import EXPORT_FORMAT, DramaModule
    from isdrama.utils.io import atomic_path, atomic_write_json

    drama, codec, out = Path(drama), Path(codec), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = torch.load(codec, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{codec}: not an isdrama codec checkpoint ({CHECKPOINT_FORMAT})")
    codec_out = out / "codec.pt"
    codec_state = strip_training_buffers(payload["state_dict"])  # the codebooks' EMA sums: training only
    packed_codec = dict(payload, state_dict=_half(codec_state) if half else codec_state)
    with atomic_path(codec_out, suffix=".pt") as tmp:
        torch.save(packed_codec, tmp)
    codec_key = BinauralCodec.load(codec_out).config_key()

    module, meta = DramaModule.load_for_inference(drama)
    state = {
        k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in module.ema_net.state_dict().items()
    }
    export = {
        "format": EXPORT_FORMAT,
        "hyper_parameters": module.resolved_hparams(),
        "state_dict": _half(state) if half else state,
        # relative to this file's folder (resolve_codec_path)
        "codec": {"config_key": codec_key, "weights": "codec.pt"},
        "inputs": dict(module.inputs),
        "global_step": meta.get("global_step"),
    }
    drama_out = out / "drama.pt"
    with atomic_path(drama_out, suffix=".pt") as tmp:
        torch.save(export, tmp)
    atomic_write_json(
        out / "pack.json",
        {
            "drama_source": str(drama),
            "drama_source_sha1": hash_file(drama),
            "codec_source": str(codec),
            "codec_source_sha1": hash_file(codec),
            "trained_with_codec": meta.get("codec"),
            "dtype": "float16" if half else "float32",
            "files": {p.name: {"sha1": hash_file(p), "bytes": p.stat().st_size} for p in (drama_out, codec_out)},
        },
    )
    return {"drama": drama_out, "codec": codec_out, "pack": out / "pack.json"}


__all__ = ["pack_inference_checkpoints"]
