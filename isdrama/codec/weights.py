"""EnCodec weights: seeded random construction, EnCodec's own pretrained download, local
checkpoints, and atomic save of a codec state (e.g. after k-means codebook initialisation).

Without pretrained weights EnCodec's RVQ codebooks are all zeros until k-means initialisation
(``inited`` = 0), so every token is 0: see :mod:`isdrama.codec.kmeans_init`.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from encodec import EncodecModel

from isdrama.codec.config import CodecConfig, EncodecSpec
from isdrama.utils.io import atomic_path

log = logging.getLogger(__name__)

#: ``format`` tag of a checkpoint written by :func:`save_codec_state`.
CHECKPOINT_FORMAT = "isdrama-codec/1"
#: EnCodec's official file names: ``<name>-<first 8 hex digits of the file's sha256>.th``.
_OFFICIAL_NAME = re.compile(r"^[\w.]+-[0-9a-f]{8}\.th$")


class PretrainedUnavailableError(RuntimeError):
    """``pretrained: true`` and EnCodec's weights could not be obtained."""


class RandomCodecWeightsWarning(UserWarning):
    """The codec runs with random weights (pretrained weights were wanted but not available)."""


def build_encodec(spec: EncodecSpec, seed: int, architecture=None) -> EncodecModel:
    """A randomly initialised EnCodec model of ``spec`` (the published architecture, or
    ``architecture``, a :class:`~isdrama.codec.architecture.CodecArchitecture`), reproducible
    from ``seed``.

    The global torch RNG is left as it was. Codebooks are zeros with ``inited`` = 0 (EnCodec's
    ``kmeans_init``), exactly as EnCodec builds them before training.
    """
    builders = {"encodec_24khz": EncodecModel.encodec_model_24khz, "encodec_48khz": EncodecModel.encodec_model_48khz}
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        torch.manual_seed(seed)
        if architecture is None:
            model = builders[spec.name](pretrained=False)
        else:
            from isdrama.codec.architecture import build_encodec_model

            model = build_encodec_model(spec, architecture)
    model.name = spec.name
    return model


def checkpoint_architecture(path: Path | str) -> Optional[dict]:
    """The architecture an isdrama codec checkpoint was saved with (None: the published EnCodec
    architecture, or a file that is not an isdrama codec checkpoint)."""
    path = Path(path).expanduser()
    if not path.is_file() or _OFFICIAL_NAME.match(path.name):
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read codec.checkpoint: {exc}") from exc
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return obj.get("config", {}).get("architecture")
    return None


def download_pretrained_state(spec: EncodecSpec) -> dict[str, torch.Tensor]:
    """EnCodec's pretrained state dict through its own download (torch hub's cache first).

    With ``HF_HUB_OFFLINE=1`` (the project's offline switch) only torch hub's cache is used:
    a missing file raises ConnectionError instead of trying the network.
    """
    cached = Path(torch.hub.get_dir()) / "checkpoints" / spec.checkpoint_name
    if _offline() and not cached.is_file():
        raise ConnectionError(f"offline (HF_HUB_OFFLINE=1) and {cached} is not there")
    return EncodecModel._get_pretrained(spec.checkpoint_name, None)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def read_checkpoint(path: Path | str, spec: EncodecSpec) -> dict[str, torch.Tensor]:
    """State dict from a local checkpoint (see ``CodecConfig.checkpoint`` for the accepted forms).

    Raises FileNotFoundError / ValueError naming the file.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        official = path / spec.checkpoint_name
        if not official.is_file():
            raise FileNotFoundError(
                f"{path}: codec.checkpoint is a directory but holds no "
                f"{spec.checkpoint_name} (EnCodec's file for {spec.name})"
            )
        return _read_official(official)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: codec.checkpoint not found")
    if _OFFICIAL_NAME.match(path.name):
        return _read_official(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read codec.checkpoint: {exc}") from exc
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        saved_model = obj.get("config", {}).get("model")
        if saved_model != spec.name:
            raise ValueError(f"{path}: codec checkpoint holds model {saved_model!r}, but codec.model is {spec.name!r}")
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not any(k.startswith("encoder.") for k in obj):
        raise ValueError(
            f"{path}: codec.checkpoint is neither an EnCodec state dict nor an "
            f"isdrama codec checkpoint ({CHECKPOINT_FORMAT})"
        )
    return obj


def _read_official(path: Path) -> dict[str, torch.Tensor]:
    """EnCodec's own loader: checks the sha256 prefix in the file name, then loads."""
    try:
        return EncodecModel._get_pretrained(path.name, path.parent)
    except Exception as exc:
        raise ValueError(f"{path}: EnCodec checkpoint rejected ({type(exc).__name__}: {exc})") from exc


def load_weights(model: EncodecModel, config: CodecConfig) -> str:
    """Put the weights ``config`` asks for into ``model``; return where they came from.

    Returns ``checkpoint:<path>``, ``pretrained:<file>`` or ``random(seed=N)``. With
    ``pretrained: auto`` a failed download warns (:class:`RandomCodecWeightsWarning` + log) and
    keeps the random weights; with ``true`` it raises :class:`PretrainedUnavailableError`.
    """
    spec = config.spec
    if config.checkpoint is not None:
        state = read_checkpoint(config.checkpoint, spec)
        _load_state(model, state, config.checkpoint)
        return f"checkpoint:{config.checkpoint}"
    if config.pretrained == "false":
        return f"random(seed={config.seed})"
    if config.architecture is not None:
        raise ValueError(
            "codec.architecture describes a trained codec: load it with codec.checkpoint=PATH (a file "
            "written by `python train.py experiment=codec_demo`); EnCodec's pretrained weights fit only "
            "the published architecture (codec.architecture=null). codec.pretrained=false gives random weights."
        )
    try:
        state = download_pretrained_state(spec)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if config.pretrained == "true":
            raise PretrainedUnavailableError(
                f"codec.pretrained=true but EnCodec's weights {spec.checkpoint_name} could not be "
                f"downloaded ({reason}). Put the file in torch hub's cache "
                f"({torch.hub.get_dir()}/checkpoints) or pass codec.checkpoint=PATH."
            ) from exc
        message = (
            f"!!! EnCodec pretrained weights {spec.checkpoint_name} are NOT available ({reason}). "
            f"Continuing with RANDOM codec weights (seed {config.seed}): tokens and decoded audio "
            "are meaningless until codebooks are k-means initialised (isdrama.codec."
            "init_codebooks_kmeans; `isdrama-data tokenize` does this) and the codec is trained. "
            "Set codec.pretrained=false to silence this, or codec.checkpoint=PATH to use local weights."
        )
        log.warning(message)
        warnings.warn(message, RandomCodecWeightsWarning, stacklevel=3)
        return f"random(seed={config.seed})"
    _load_state(model, state, spec.checkpoint_name)
    return f"pretrained:{spec.checkpoint_name}"


#: training-only buffers of EnCodec's EMA codebooks (embed_avg = the running sum behind embed)
EMA_SUM_SUFFIX = "._codebook.embed_avg"


def strip_training_buffers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without the codebooks' EMA sums (half the quantiser's bytes; only codebook
    updates in training read them), as inference checkpoints store it (``isdrama-infer pack``)."""
    return {k: v for k, v in state.items() if not k.endswith(EMA_SUM_SUFFIX)}


def _restore_training_buffers(model: EncodecModel, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Refill EMA sums a packed checkpoint left out: embed_avg = embed * cluster_size, the state an
    EMA codebook is in after an update (embed = embed_avg / cluster_size)."""
    out = dict(state)
    for key in model.state_dict():
        if key.endswith(EMA_SUM_SUFFIX) and key not in out:
            base = key[: -len("embed_avg")]
            if base + "embed" in out and base + "cluster_size" in out:
                out[key] = out[base + "embed"] * out[base + "cluster_size"].to(out[base + "embed"].dtype)[:, None]
    return out


def _load_state(model: EncodecModel, state: dict[str, torch.Tensor], source: str) -> None:
    state = _restore_training_buffers(model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{source}: weights do not fit EnCodec model {model.name}: {exc}") from exc


def save_codec_state(
    path: Path | str, config: CodecConfig, model: EncodecModel, extra: Optional[dict[str, Any]] = None
) -> Path:
    """Write ``{format, config, state_dict, extra}`` atomically; load it with ``codec.checkpoint``."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return path
