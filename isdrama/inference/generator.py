"""The inference API: a drama script -> a binaural drama, usable without Hydra.

    from isdrama.inference import DramaGenerator, load_script
    gen = DramaGenerator.from_checkpoint("checkpoints/demo/drama.pt")   # codec found beside it
    drama = gen.generate(load_script("examples/three_speakers.yaml"))
    drama.save("outputs/drama")            # drama.wav (48 kHz binaural), lines/, manifest.json

Per line (in script order): content tokens from the text; frames from the pose / video span (or
the line's ``duration``) when given, else the content encoder's predicted durations; z_p from the
one branch the line's pose asks for (trajectory / pose file -> geo, pose_text -> text, video ->
video); generation by :func:`~isdrama.inference.line_generator.sample_latents` (the drama
stage's own code path) with the speaker's prompt and, from the speaker's second line on, the
previous generated line of that speaker as the second prompt (context-consistent guidance);
decoded by the codec. The drama: lines resampled to 48 kHz, joined with their pauses,
loudness-normalised (ITU-R BS.1770, pyloudnorm) and peak-limited.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from isdrama.data.cache import hash_file
from isdrama.inference.line_generator import Guidance, quantize_latents, sample_latents
from isdrama.inference.poses import PoseInput, line_pose_input, pose_file_frames
from isdrama.inference.script import DramaScript, Line
from isdrama.models.pose_encoder import select_pose_branches

log = logging.getLogger(__name__)

#: MRSDrama's sample rate: the drama and its line wavs are written at it
OUTPUT_SAMPLE_RATE = 48000
_PUNCT = re.compile(r"[,.!?;:，。！？；：、…]+")


def line_words(text: str) -> list[str]:
    """A line's text as the word list the content tokenizer takes, in the training data's layout:
    ``<SP>`` at the start, at every punctuation break and at the end; punctuation dropped."""
    from isdrama.data.text_tokenizer import SIL_TOKEN

    words = [SIL_TOKEN]
    for phrase in _PUNCT.split(text):
        parts = phrase.split()
        if parts:
            words.extend(parts)
            words.append(SIL_TOKEN)
    return words


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling and output settings (defaults: configs/infer.yaml)."""

    steps: int
    guidance_scale: float
    alpha: float
    content_guidance_scale: Optional[float]
    seed: int
    loudness_lufs: Optional[float]
    peak: float
    speed: float = 1.0

    @property
    def guidance(self) -> Guidance:
        return Guidance(
            steps=self.steps, scale=self.guidance_scale, alpha=self.alpha, content_scale=self.content_guidance_scale
        )


@dataclass
class LineAudio:
    """One generated line: binaural ``wav`` (2, N) at ``sample_rate``, its raw latents (T, C), the
    standardised latents of its codec tokens (T, C: the next line's context prompt, built like the
    training prompts), frames, seed, the branch used,
    where its frame count came from, and the geometric pose (T, 9) when it had one."""

    wav: np.ndarray
    sample_rate: int
    latents: torch.Tensor
    normalized: torch.Tensor
    frames: int
    seed: int
    branch: str
    frames_from: str
    pose: Optional[np.ndarray] = None


@dataclass
class Drama:
    """A generated drama: ``wav`` (2, N) at ``sample_rate``, per-line wavs and the manifest."""

    wav: np.ndarray
    sample_rate: int
    line_wavs: list[np.ndarray]
    manifest: dict[str, Any]
    line_audio: list[LineAudio] = field(default_factory=list, repr=False)

    @property
    def seconds(self) -> float:
        return self.wav.shape[1] / self.sample_rate

    def save(self, out_dir: Path | str, video: Optional[Path] = None) -> dict[str, Path]:
        """Write ``drama.wav``, ``lines/NNN_<speaker>.wav``, ``manifest.json``, ``report.md``
        (atomically) and, with ``video``, ``drama.mp4`` (the video with this audio). Returns the paths."""
        from isdrama.data.audio import write_audio
        from isdrama.utils.io import atomic_write_json

        out = Path(out_dir)
        (out / "lines").mkdir(parents=True, exist_ok=True)
        paths = {"drama": out / "drama.wav", "manifest": out / "manifest.json"}
        write_audio(paths["drama"], self.wav, self.sample_rate)
        for rec, wav in zip(self.manifest["lines"], self.line_wavs):
            write_audio(out / rec["wav"], wav, self.sample_rate)
        if video is not None:
            from isdrama.inference.mux import mux_audio

            paths["video"] = mux_audio(Path(video), paths["drama"], out / "drama.mp4")
            self.manifest["video"] = {"input": str(video), "output": "drama.mp4"}
        atomic_write_json(paths["manifest"], self.manifest)
        from isdrama.inference.report import write_drama_report

        paths["report"] = write_drama_report(out)
        return paths


def resample_audio(wav: np.ndarray, sr: int, target: int) -> np.ndarray:
    """(C, N) float audio from ``sr`` to ``target`` (torchaudio's windowed sinc)."""
    if sr == target:
        return np.asarray(wav, dtype=np.float32)
    import torchaudio.functional as AF

    return AF.resample(torch.as_tensor(wav, dtype=torch.float32), sr, target).numpy()


def loudness_gain(wav: np.ndarray, sr: int, target_lufs: Optional[float], peak: float) -> tuple[float, dict]:
    """The gain bringing (2, N) audio to ``target_lufs`` integrated loudness (BS.1770), lowered so
    the peak stays at most ``peak``; returns (gain, report)."""
    import pyloudnorm

    report: dict[str, Any] = {"target_lufs": target_lufs, "peak_limit": peak}
    gain = 1.0
    if target_lufs is not None and wav.shape[1] >= int(0.4 * sr):  # BS.1770 gates 400 ms blocks
        loudness = float(pyloudnorm.Meter(sr).integrated_loudness(wav.T.astype(np.float64)))
        report["input_lufs"] = loudness
        if np.isfinite(loudness):
            gain = 10 ** ((target_lufs - loudness) / 20)
    top = float(np.abs(wav).max()) * gain
    if top > peak:
        gain *= peak / top
        report["peak_limited"] = True
    report["gain_db"] = float(20 * np.log10(gain)) if gain > 0 else float("-inf")
    return gain, report


class DramaGenerator:
    """Generates lines and dramas with a drama-stage model (EMA weights) and its codec.

    Args:
        module: a :class:`~isdrama.lit.drama.DramaModule` (eval mode; its ``net`` is used).
        codec: the :class:`~isdrama.codec.BinauralCodec` whose latents the model generates.
        settings: :class:`GenerationSettings`.
        inputs: the model's input settings (``video_fps``, ``video_size``), from its export.
        device: cpu or cuda.
        identity: model / codec names and hashes for the manifest.
    """

    def __init__(
        self,
        module,
        codec,
        settings: GenerationSettings,
        inputs: Optional[dict[str, Any]] = None,
        device: str | torch.device = "cpu",
        identity: Optional[dict[str, Any]] = None,
    ):
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        module.set_codec(codec)
        self.codec = module.codec
        self.net = module.ema_net
        self.settings = settings
        self.inputs = dict(inputs or {})
        self.identity = dict(identity or {})
        if int(module.hparams.latent_dim) != self.codec.latent_dim:
            raise ValueError(
                f"the drama model generates {module.hparams.latent_dim}-channel latents but the codec's have "
                f"{self.codec.latent_dim}: wrong codec for this model"
            )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(
        cls,
        path: Path | str,
        codec: Optional[Path | str] = None,
        device: str | torch.device = "cpu",
        settings: Optional[GenerationSettings] = None,
    ) -> "DramaGenerator":
        """A generator from a drama export (``DramaModule.export``) or a drama-stage Lightning
        checkpoint (its EMA weights). ``codec``: the codec checkpoint; default the one the model
        was trained with (its recorded path), else ``codec.pt`` beside ``path``."""
        from isdrama.codec import BinauralCodec
        from isdrama.lit.drama import DramaModule

        path = Path(path)
        module, payload = DramaModule.load_for_inference(path)
        codec_path = resolve_codec_path(path, payload.get("codec"), codec)
        codec_obj = BinauralCodec.load(codec_path)
        recorded = (payload.get("codec") or {}).get("config_key")
        if recorded and recorded != codec_obj.config_key():
            log.warning(
                "codec %s (key %s) is not the codec the model was trained with (key %s); fine for a "
                "half-precision copy of the same codec, wrong otherwise",
                codec_path,
                codec_obj.config_key(),
                recorded,
            )
        identity = {
            "model": str(path),
            "model_sha1": hash_file(path),
            "model_step": payload.get("global_step"),
            "codec": str(codec_path),
            "codec_sha1": hash_file(codec_path),
            "codec_config_key": codec_obj.config_key(),
        }
        return cls(
            module,
            codec_obj,
            settings or default_settings(),
            inputs=payload.get("inputs"),
            device=device,
            identity=identity,
        )

    # ------------------------------------------------------------------ pieces
    @property
    def frame_rate(self) -> float:
        return self.codec.frame_rate

    @property
    def video_inputs(self) -> tuple[float, tuple[int, int]]:
        """(frames per second, (H, W)) of the video frames the model was trained on."""
        if "video_fps" not in self.inputs or "video_size" not in self.inputs:
            raise ValueError(
                f"{self.identity.get('model', 'the model')} does not record its video input settings "
                "(video_fps, video_size; written by the drama stage since inference exists): pass "
                "DramaGenerator(..., inputs={'video_fps': 4.0, 'video_size': [64, 64]}) as it was trained"
            )
        return float(self.inputs["video_fps"]), tuple(int(v) for v in self.inputs["video_size"])

    @property
    def guidance(self) -> Guidance:
        """The settings' guidance, its content scale g_c (None) filled with the model's
        ``model.flow.content_guidance_scale``."""
        guidance = self.settings.guidance
        if guidance.content_scale is None:
            guidance = replace(guidance, content_scale=self.net.flow.config.content_guidance_scale)
        return guidance

    @property
    def prompt_max_frames(self) -> int:
        return int(self.module.prompt_cfg.max_frames)

    @torch.no_grad()
    def encode_prompt(self, wav: np.ndarray, sample_rate: int) -> torch.Tensor:
        """A speaker prompt (N,) mono or (2, N) binaural at any rate -> standardised latents
        (P, C), P <= the model's prompt length (the first frames)."""
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim == 2 and wav.shape[0] == 1:
            wav = wav[0]
        if wav.ndim == 1:
            wav = np.stack([wav, wav])
        if wav.ndim != 2 or wav.shape[0] != 2:
            raise ValueError(f"a prompt must be mono (N,) or binaural (2, N), got {wav.shape}")
        if wav.shape[1] == 0 or not np.isfinite(wav).all():
            raise ValueError("a prompt must be non-empty and finite")
        wav = resample_audio(wav, sample_rate, self.codec.sample_rate)
        hop = self.codec.hop_length
        wav = wav[:, : self.prompt_max_frames * hop]
        tokens = self.codec.encode(torch.from_numpy(wav)[None].to(self.device))
        latents = self.module.latents(tokens)[0]
        return self.net.flow.normalize(latents)

    def encode_prompt_file(self, path: Path | str) -> torch.Tensor:
        from isdrama.data.audio import read_audio

        wav, sr = read_audio(path)
        return self.encode_prompt(wav, sr)

    def tokens(self, text: str) -> torch.Tensor:
        """(L,) content token ids of a line's text (the model's own vocabulary)."""
        tok = self.net.frontend.content.tokenizer
        return torch.as_tensor(tok.encode_words(line_words(text)).ids, dtype=torch.long)

    @torch.no_grad()
    def predict_frames(self, tokens: torch.Tensor) -> int:
        """Model frames of a line from the content encoder's predicted durations (/ speed)."""
        ids = tokens[None].to(self.device)
        out = self.net.frontend.content(ids, torch.ones_like(ids, dtype=torch.bool), speed=self.settings.speed)
        return max(1, int(out["durations"].sum()))

    def line_frames(self, line: Line) -> tuple[int, str]:
        """(frames, where they came from) of a script line."""
        if line.duration is not None:
            return max(1, round(line.duration * self.frame_rate)), "duration"
        if line.pose_kind == "video":
            return max(1, round(line.video.span * self.frame_rate)), "video span"
        if line.pose_kind == "pose_file":
            return pose_file_frames(line.pose_file, self.frame_rate), "pose file"
        if line.pose_kind == "trajectory" and line.trajectory.span is not None:
            return max(1, round(line.trajectory.span * self.frame_rate)), "trajectory span"
        return self.predict_frames(self.tokens(line.text)), "predicted"

    def pose_input(self, line: Line, frames: int) -> PoseInput:
        """The front-end input of a script line's pose for a line of ``frames`` model frames."""
        fps, size = self.video_inputs if line.pose_kind == "video" else (0.0, (0, 0))
        return line_pose_input(line, frames, self.frame_rate, fps, size)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_line(
        self,
        text: str,
        pose: PoseInput,
        prompt: Optional[torch.Tensor],
        frames: Optional[int] = None,
        previous: Optional[torch.Tensor] = None,
        seed: int = 0,
        scene_text: Optional[str] = None,
    ) -> LineAudio:
        """One line.

        Args:
            text: what is said. pose: the line's :class:`PoseInput` (its geometric pose, if any,
                must have ``frames`` rows). prompt: (P, C) standardised speaker-prompt latents
                (:meth:`encode_prompt`) or None (unconditional voice).
            frames: model frames (None: predicted from the text).
            previous: (P', C) standardised latents of the speaker's previous generated line
                (context-consistent guidance), or None.
            seed: noise seed. scene_text: the scene description (models with a text scene).
        """
        dev = self.device
        tokens = self.tokens(text)
        frames_from = "predicted" if frames is None else "given"
        frames = self.predict_frames(tokens) if frames is None else int(frames)
        front = self.net.frontend
        if pose.branch not in front.branches:
            raise ValueError(
                f"this model's pose encoder has no {pose.branch!r} branch (it has {list(front.branches)}): "
                f"it cannot take a {pose.branch} pose prompt"
            )
        ids = tokens[None].to(dev)
        frame_mask = torch.ones(1, frames, dtype=torch.bool, device=dev)
        kwargs: dict[str, Any] = {}
        if pose.branch == "geo":
            if pose.pose.shape[0] != frames:
                raise ValueError(f"the pose has {pose.pose.shape[0]} rows for a line of {frames} frames")
            kwargs["pose"] = pose.pose[None].to(dev, torch.float32)
        elif pose.branch == "video":
            kwargs["video"] = pose.video[None].to(dev)
            kwargs["video_mask"] = torch.ones(1, pose.video.shape[0], dtype=torch.bool, device=dev)
        else:
            kwargs["prompts"] = [pose.text]
        out = front(ids, torch.ones_like(ids, dtype=torch.bool), frame_mask, with_chunks=False, **kwargs)
        C = int(self.module.hparams.latent_dim)
        if prompt is None:
            prompt_x, prompt_mask = torch.zeros(1, 1, C, device=dev), torch.zeros(1, 1, dtype=torch.bool, device=dev)
        else:
            prompt_x = prompt[None].to(dev)
            prompt_mask = torch.ones(prompt_x.shape[:2], dtype=torch.bool, device=dev)
        cond = {
            "z_c": self.module.transformer_content(self.net, out, [line_words(text)]),
            "z_p": select_pose_branches(out, [pose.branch]),
            "prompt": prompt_x,
            "prompt_mask": prompt_mask,
            "temperature": float(self.module.routing_temperature),
            **self.scene_condition(scene_text),
        }
        prev = None
        if previous is not None:
            p = previous[-self.prompt_max_frames :][None].to(dev)
            prev = (p, torch.ones(p.shape[:2], dtype=torch.bool, device=dev))
        latents = sample_latents(
            self.net.flow,
            frame_mask,
            cond,
            self.guidance,
            seed,
            prev,
            self.module.uncond_drops_content,
            self.module.uncond_drops_pose,
        )
        tokens = quantize_latents(self.codec, latents)
        wav = self.codec.decode(tokens)[0, :, : frames * self.codec.hop_length]
        # the next line's context prompt: the line as the codec's tokens say it, as training prompts are
        heard = self.module.latents(tokens)
        return LineAudio(
            wav=wav.float().cpu().numpy(),
            sample_rate=self.codec.sample_rate,
            latents=latents[0].cpu(),
            normalized=self.net.flow.normalize(heard)[0].cpu(),
            frames=frames,
            seed=int(seed),
            branch=pose.branch,
            frames_from=frames_from,
            pose=pose.pose.numpy() if pose.pose is not None else None,
        )

    def scene_condition(self, scene_text: Optional[str]) -> dict[str, Any]:
        """``scene`` / ``scene_mask`` estimator keywords for the model's scene source."""
        source = self.module.scene_source
        if source == "text" and scene_text:
            feats, mask = self.net.frontend.text_features([scene_text], self.device)
            return {"scene": feats, "scene_mask": mask}
        if source == "video":
            raise NotImplementedError(
                "models trained with model.scene.source=video need the drama's scene video frames; "
                "inference does not build them yet (train with scene.source none or text)"
            )
        return {"scene": None, "scene_mask": None}

    def generate(self, script: DramaScript, progress: bool = True) -> Drama:
        """Every line of ``script`` in order -> a :class:`Drama` (see the module docstring)."""
        from tqdm.auto import tqdm

        s = self.settings
        prompts = {name: self.encode_prompt_file(spk.prompt) for name, spk in script.speakers.items()}
        previous: dict[str, torch.Tensor] = {}
        results: list[LineAudio] = []
        bar = tqdm(script.lines, desc="lines", unit="line", disable=not progress)
        for line in bar:
            bar.set_postfix_str(f"{line.speaker}: {line.text[:24]}")
            frames, source = self.line_frames(line)
            pose = self.pose_input(line, frames)
            seed = line.seed if line.seed is not None else s.seed + line.index
            res = self.generate_line(
                line.text,
                pose,
                prompts[line.speaker],
                frames=frames,
                previous=previous.get(line.speaker),
                seed=seed,
                scene_text=script.scene.description,
            )
            res.frames_from = source
            previous[line.speaker] = res.normalized
            results.append(res)
        return self.assemble(script, results)

    def assemble(self, script: DramaScript, results: Sequence[LineAudio]) -> Drama:
        """Lines -> the drama at 48 kHz (pauses, loudness, peak) and its manifest."""
        sr = OUTPUT_SAMPLE_RATE
        lines48 = [resample_audio(r.wav, r.sample_rate, sr) for r in results]
        pieces, records, t = [], [], 0.0
        for line, res, wav in zip(script.lines, results, lines48):
            gap = np.zeros((2, int(round(line.pause * sr))), dtype=np.float32)
            pieces += [gap, wav]
            t += gap.shape[1] / sr
            records.append(
                {
                    "index": line.index,
                    "speaker": line.speaker,
                    "text": line.text,
                    "language": line.language,
                    "start": round(t, 6),
                    "end": round(t + wav.shape[1] / sr, 6),
                    "frames": res.frames,
                    "frames_from": res.frames_from,
                    "pose_kind": line.pose_kind,
                    "pose_branch": res.branch,
                    "pose": line.pose_description,
                    "seed": res.seed,
                    "wav": f"lines/{line.index:03d}_{_safe(line.speaker)}.wav",
                    **spatial_summary(wav, res.pose),
                }
            )
            t += wav.shape[1] / sr
        drama = np.concatenate(pieces, axis=1) if pieces else np.zeros((2, 0), np.float32)
        gain, loud = loudness_gain(drama, sr, self.settings.loudness_lufs, self.settings.peak)
        manifest = {
            "format": "isdrama-drama-manifest-v1",
            "script": str(script.path) if script.path else None,
            "title": script.title,
            "sample_rate": sr,
            "seconds": round(drama.shape[1] / sr, 6),
            "speakers": {n: {"prompt": str(sp.prompt), "language": sp.language} for n, sp in script.speakers.items()},
            "scene": {k: (str(v) if v is not None else None) for k, v in asdict(script.scene).items()},
            "guidance": {
                "steps": self.settings.steps,
                "scale": self.settings.guidance_scale,
                "alpha": self.settings.alpha,
                # the unconditional branch: without the prompt (the paper's) or also without the
                # content, whose own scale is then content_scale (None: scale)
                "drops_content": self.module.uncond_drops_content,
                "drops_pose": self.module.uncond_drops_pose,
                "content_scale": self.guidance.content_scale if self.module.uncond_drops_content else None,
            },
            "settings": asdict(self.settings),
            "loudness": loud,
            "model": self.identity,
            "device": str(self.device),
            "lines": records,
        }
        return Drama(
            wav=(drama * gain).astype(np.float32),
            sample_rate=sr,
            line_wavs=[(w * gain).astype(np.float32) for w in lines48],
            manifest=manifest,
            line_audio=list(results),
        )


def spatial_summary(wav: np.ndarray, pose: Optional[np.ndarray]) -> dict[str, Any]:
    """What a listener checks first: the generated line's broadband ILD (dB, + = louder left) over
    the whole line and its two halves, and, for a geometric pose, the side it asks for
    (left / right, None within 22.5 degrees of the median plane, as the acceptance scores it)."""
    from isdrama.metrics.interaural import broadband_ild_db, lateral_side

    half = wav.shape[1] // 2
    out: dict[str, Any] = {
        "ild_db": round(broadband_ild_db(wav), 2),
        "ild_first_half_db": round(broadband_ild_db(wav[:, :half]), 2) if half else None,
        "ild_second_half_db": round(broadband_ild_db(wav[:, half:]), 2) if half else None,
    }
    if pose is not None:
        side = lateral_side(pose)
        out["pose_side"] = {1: "left", -1: "right"}.get(side) if side is not None else None
        out["pose_x_first_last_m"] = [round(float(pose[0, 0]), 2), round(float(pose[-1, 0]), 2)]
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "speaker"


def default_settings(**overrides: Any) -> GenerationSettings:
    """The settings of configs/infer.yaml (``generation``), with ``overrides``."""
    from isdrama.utils.config import project_config

    values = dict(project_config("infer")["generation"])
    values.update(overrides)
    return GenerationSettings(**values)


def resolve_codec_path(model_path: Path, recorded: Optional[dict], given: Optional[Path | str]) -> Path:
    """The codec checkpoint to use: ``given``, else the model's recorded codec file, else
    ``codec.pt`` beside the model. Raises FileNotFoundError listing what was tried."""
    tried = []
    candidates = [Path(given)] if given is not None else []
    if given is None:
        weights = (recorded or {}).get("weights")
        if isinstance(weights, str) and weights.startswith("checkpoint:"):
            weights = weights.split(":", 1)[1]
        if isinstance(weights, str) and weights and not weights.startswith("random"):
            p = Path(weights)
            candidates.append(p if p.is_absolute() else model_path.parent / p)
        candidates.append(model_path.parent / "codec.pt")
    for c in candidates:
        tried.append(str(c))
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"{model_path}: no codec checkpoint found (tried {tried}); pass the codec the model was trained with "
        "(--codec / codec=PATH)"
    )


__all__ = [
    "Drama",
    "DramaGenerator",
    "GenerationSettings",
    "LineAudio",
    "default_settings",
    "line_words",
    "loudness_gain",
    "resolve_codec_path",
]
