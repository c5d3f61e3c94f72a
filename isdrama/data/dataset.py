"""Torch dataset over DramaLines and its collation into a typed batch.

Everything is brought to the model time base (the codec frame rate) here: pose is resampled by
``isdrama.data.resample.resample_pose`` and word durations are turned into frame counts that sum
exactly to the line's frame count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from isdrama.data.audio import audio_info
from isdrama.data.sampler import pad_stack
from isdrama.data.schema import POSE_FRAME_RATE, DataError, DramaLine, validate_pose_array
from isdrama.data.video_frames import VideoFrameCache

#: (words, word_frames, language) -> (token ids (L,), token frames (L,)) — e.g. the content tokenizer.
ContentTokenizer = Callable[[Sequence[str], Sequence[int], str], tuple[torch.Tensor, torch.Tensor]]
#: line -> tokens (2, n_q, T) int array — e.g. TokenCache.load.
TokenLoader = Callable[[DramaLine], np.ndarray]
#: (line, frames) -> F0 (2 ears, [log F0, voiced], T) float array — e.g. F0Cache.load.
F0Loader = Callable[[DramaLine, int], np.ndarray]


@dataclass(frozen=True)
class ItemOptions:
    """What each item carries (all at ``frame_rate`` frames/s).

    Args:
        frame_rate: model frames per second (the codec's, ``data.items.frame_rate``; no default).
        load_tokens: read cached codec tokens (needs a token loader).
        load_pose: read and resample the geometric pose.
        load_video: sample video frames over the line's span.
        video_fps: video sampling rate (4 in the paper).
        video_size: (H, W) of video frames.
        prompt_max_frames: longest speaker prompt (frames); 0 disables prompts.
        load_f0: read the line's binaural F0 targets (needs an F0 loader, e.g. ``F0Cache``).
    """

    frame_rate: float
    load_tokens: bool = True
    load_pose: bool = True
    load_video: bool = False
    video_fps: float = 4.0
    video_size: tuple[int, int] = (64, 64)
    prompt_max_frames: int = 225
    load_f0: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "video_size", tuple(self.video_size))  # a YAML list -> (H, W)


def words_to_frames(durations: Sequence[float], frame_rate: float, total_frames: int) -> np.ndarray:
    """Word durations (s) -> integer frame counts summing exactly to ``total_frames``.

    Boundaries are rounded cumulatively (no drift); the last word absorbs the difference between
    the rounded total and ``total_frames`` (at most a frame or two for consistent data).
    """
    if len(durations) == 0:
        return np.zeros(0, dtype=np.int64)
    bounds = np.round(np.cumsum(np.asarray(durations, dtype=np.float64)) * frame_rate).astype(np.int64)
    bounds = np.minimum(bounds, total_frames)
    bounds[-1] = total_frames
    return np.diff(np.concatenate([[0], bounds]))


def line_frames(line: DramaLine, frame_rate: float) -> int:
    """Frames of a line at ``frame_rate`` from its audio length (ceil, as EnCodec pads)."""
    info = audio_info(line.wav_path)
    return max(1, math.ceil(info.frames * frame_rate / info.samplerate - 1e-9))


@dataclass
class DramaItem:
    """One line, model-ready. T = frames at the codec rate."""

    key: str
    frames: int
    speaker: str
    drama: str
    scene: Optional[str]
    words: list[str]
    word_frames: torch.Tensor  # (W,) long, sums to T
    text: str
    language: str
    pose_prompt: Optional[str]
    tokens: Optional[torch.Tensor] = None  # (2, n_q, T) long
    pose: Optional[torch.Tensor] = None  # (T, 9) float
    video: Optional[torch.Tensor] = None  # (F, 3, H, W) uint8
    prompt_tokens: Optional[torch.Tensor] = None  # (2, n_q, Tp) long
    content_ids: Optional[torch.Tensor] = None  # (L,) long
    content_frames: Optional[torch.Tensor] = None  # (L,) long, sums to T
    f0: Optional[torch.Tensor] = None  # (T, 2) log F0 (log Hz, 0 unvoiced), left / right
    f0_voiced: Optional[torch.Tensor] = None  # (T, 2) bool


class DramaLineDataset(Dataset):
    """Lines of one split.

    Args:
        lines: the split's lines.
        options: what to load.
        token_loader: reads cached tokens for a line (required when ``options.load_tokens``).
        video_cache: frame cache (required when ``options.load_video``).
        tokenizer: optional content tokenizer (words -> token ids with frame durations).
        train: random speaker-prompt choice/crop (else deterministic).
        seed: base seed of the random choices.
        f0_loader: reads a line's F0 targets (required when ``options.load_f0``).
    """

    def __init__(
        self,
        lines: Sequence[DramaLine],
        options: ItemOptions,
        token_loader: Optional[TokenLoader] = None,
        video_cache: Optional[VideoFrameCache] = None,
        tokenizer: Optional[ContentTokenizer] = None,
        train: bool = False,
        seed: int = 0,
        f0_loader: Optional[F0Loader] = None,
    ):
        if options.load_tokens and token_loader is None:
            raise ValueError("load_tokens=True needs a token_loader (e.g. TokenCache.load)")
        if options.load_video and video_cache is None:
            raise ValueError("load_video=True needs a VideoFrameCache")
        if options.load_f0 and f0_loader is None:
            raise ValueError("load_f0=True needs an f0_loader (e.g. F0Cache.load)")
        self.f0_loader = f0_loader
        self.lines = list(lines)
        self.options = options
        self.token_loader = token_loader
        self.video_cache = video_cache
        self.tokenizer = tokenizer
        self.train = train
        self.seed = seed
        self.epoch = 0
        by_speaker: dict[str, list[int]] = {}
        for i, line in enumerate(self.lines):
            by_speaker.setdefault(line.speaker, []).append(i)
        self._same_speaker = by_speaker

    def __len__(self) -> int:
        return len(self.lines)

    def set_epoch(self, epoch: int) -> None:
        """New random speaker-prompt choices each epoch (train only)."""
        self.epoch = epoch

    def approx_frames(self) -> list[int]:
        """Frame counts from the annotated spans (no file access), for batching."""
        return [max(1, math.ceil(line.duration * self.options.frame_rate)) for line in self.lines]

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch if self.train else 0, index))

    def _load_tokens(self, line: DramaLine) -> torch.Tensor:
        tokens = np.asarray(self.token_loader(line))
        if tokens.ndim != 3 or tokens.shape[0] != 2:
            raise DataError(line.wav_path, f"cached tokens must be (2, n_q, T); got {tokens.shape}")
        return torch.from_numpy(tokens.astype(np.int64))

    def _load_pose(self, line: DramaLine, frames: int) -> Optional[torch.Tensor]:
        from isdrama.data.resample import resample_pose

        if line.pose_path is None:
            return None
        try:
            pose = np.load(line.pose_path, allow_pickle=False)
        except Exception as exc:
            raise DataError(line.pose_path, f"cannot read pose .npy: {exc}") from exc
        pose = validate_pose_array(pose, line.pose_path)
        pose = np.asarray(resample_pose(pose, POSE_FRAME_RATE, self.options.frame_rate), dtype=np.float32)
        if pose.shape[0] < frames:  # a frame short from rounding: hold the last pose
            pose = np.concatenate([pose, np.repeat(pose[-1:], frames - pose.shape[0], axis=0)])
        return torch.from_numpy(pose[:frames])

    def _prompt(self, index: int, line: DramaLine) -> Optional[torch.Tensor]:
        others = [j for j in self._same_speaker[line.speaker] if j != index]
        if not others or self.options.prompt_max_frames <= 0:
            return None
        rng = self._rng(index)
        other = others[int(rng.integers(len(others)))] if self.train else others[0]
        tokens = self._load_tokens(self.lines[other])
        length = tokens.shape[-1]
        span = min(length, self.options.prompt_max_frames)
        start = int(rng.integers(0, length - span + 1)) if self.train else 0
        return tokens[..., start : start + span]

    def __getitem__(self, index: int) -> DramaItem:
        line = self.lines[index]
        opts = self.options
        tokens = self._load_tokens(line) if opts.load_tokens else None
        frames = int(tokens.shape[-1]) if tokens is not None else line_frames(line, opts.frame_rate)
        word_frames = torch.from_numpy(words_to_frames(line.word_durations, opts.frame_rate, frames))
        item = DramaItem(
            key=line.key,
            frames=frames,
            speaker=line.speaker,
            drama=f"{line.set_name}/{line.drama_id}",
            scene=line.scene_id,
            words=list(line.words),
            word_frames=word_frames,
            text=line.text,
            language=line.language or "zh",
            pose_prompt=line.pose_prompt,
            tokens=tokens,
        )
        if opts.load_pose:
            item.pose = self._load_pose(line, frames)
        if opts.load_video and line.video_path is not None:
            frames_rgb = self.video_cache.get(line.video_path, line.start, line.end)
            item.video = torch.from_numpy(frames_rgb).permute(0, 3, 1, 2).contiguous()
        if opts.load_tokens:
            item.prompt_tokens = self._prompt(index, line)
        if self.tokenizer is not None:
            item.content_ids, item.content_frames = self.tokenizer(item.words, word_frames.tolist(), item.language)
        if opts.load_f0:
            f0 = torch.from_numpy(np.asarray(self.f0_loader(line, frames), dtype=np.float32))
            item.f0, item.f0_voiced = f0[:, 0].T.contiguous(), f0[:, 1].T > 0.5
        return item


@dataclass
class DramaBatch:
    """A padded batch. B = lines, T = frames (codec rate); masks are True on valid positions."""

    keys: list[str]
    frames: torch.Tensor  # (B,) long
    mask: torch.Tensor  # (B, T) bool
    speaker_ids: torch.Tensor  # (B,) long, index into ``speakers``
    drama_ids: torch.Tensor  # (B,) long, same value = same drama (hard negatives)
    scene_ids: torch.Tensor  # (B,) long, -1 when unknown
    texts: list[str]
    languages: list[str]
    pose_prompts: list[Optional[str]]
    words: list[list[str]]
    word_frames: list[torch.Tensor]
    tokens: Optional[torch.Tensor] = None  # (B, 2, n_q, T) long
    pose: Optional[torch.Tensor] = None  # (B, T, 9) float
    pose_mask: Optional[torch.Tensor] = None  # (B,) bool: line has a pose
    video: Optional[torch.Tensor] = None  # (B, F, 3, H, W) uint8
    video_mask: Optional[torch.Tensor] = None  # (B, F) bool
    prompt_tokens: Optional[torch.Tensor] = None  # (B, 2, n_q, Tp) long
    prompt_mask: Optional[torch.Tensor] = None  # (B, Tp) bool
    content_ids: Optional[torch.Tensor] = None  # (B, L) long
    content_frames: Optional[torch.Tensor] = None  # (B, L) long
    content_mask: Optional[torch.Tensor] = None  # (B, L) bool
    f0: Optional[torch.Tensor] = None  # (B, T, 2) log F0 (log Hz, 0 unvoiced), left / right
    f0_voiced: Optional[torch.Tensor] = None  # (B, T, 2) bool
    speakers: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device | str) -> "DramaBatch":
        """Move every tensor field, and every tensor inside a list field (``word_frames``), to
        ``device``, in place; returns self."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                setattr(self, f.name, value.to(device))
            elif isinstance(value, list) and any(isinstance(v, torch.Tensor) for v in value):
                setattr(self, f.name, [v.to(device) if isinstance(v, torch.Tensor) else v for v in value])
        return self


class DramaCollator:
    """Pads DramaItems into a DramaBatch. ``speakers``/``scenes``: fixed vocabularies (id = position)."""

    def __init__(self, speakers: Sequence[str], scenes: Sequence[str]):
        self.speakers = list(speakers)
        self.speaker_index = {s: i for i, s in enumerate(self.speakers)}
        self.scene_index = {s: i for i, s in enumerate(scenes)}

    def __call__(self, items: Sequence[DramaItem]) -> DramaBatch:
        frames = torch.tensor([it.frames for it in items], dtype=torch.long)
        mask = torch.arange(int(frames.max()))[None, :] < frames[:, None]
        dramas = {d: i for i, d in enumerate(dict.fromkeys(it.drama for it in items))}
        batch = DramaBatch(
            keys=[it.key for it in items],
            frames=frames,
            mask=mask,
            speaker_ids=torch.tensor([self.speaker_index.get(it.speaker, -1) for it in items]),
            drama_ids=torch.tensor([dramas[it.drama] for it in items]),
            scene_ids=torch.tensor([self.scene_index.get(it.scene, -1) for it in items]),
            texts=[it.text for it in items],
            languages=[it.language for it in items],
            pose_prompts=[it.pose_prompt for it in items],
            words=[it.words for it in items],
            word_frames=[it.word_frames for it in items],
            speakers=self.speakers,
        )
        if all(it.tokens is not None for it in items):
            batch.tokens, _ = pad_stack([it.tokens for it in items], dim=-1)
        if any(it.pose is not None for it in items):
            batch.pose_mask = torch.tensor([it.pose is not None for it in items])
            poses = [it.pose if it.pose is not None else torch.zeros(it.frames, 9) for it in items]
            batch.pose, _ = pad_stack(poses, dim=0)
        if any(it.video is not None for it in items):
            ref = next(it.video for it in items if it.video is not None)
            videos = [it.video if it.video is not None else ref[:0] for it in items]
            batch.video, batch.video_mask = pad_stack(videos, dim=0)
        if any(it.prompt_tokens is not None for it in items):
            ref = next(it.prompt_tokens for it in items if it.prompt_tokens is not None)
            prompts = [it.prompt_tokens if it.prompt_tokens is not None else ref[..., :0] for it in items]
            batch.prompt_tokens, batch.prompt_mask = pad_stack(prompts, dim=-1)
        if all(it.content_ids is not None for it in items):
            batch.content_ids, batch.content_mask = pad_stack([it.content_ids for it in items], dim=0)
            batch.content_frames, _ = pad_stack([it.content_frames for it in items], dim=0)
        if all(it.f0 is not None for it in items):
            batch.f0, _ = pad_stack([it.f0 for it in items], dim=0)
            batch.f0_voiced, _ = pad_stack([it.f0_voiced for it in items], dim=0)
        return batch
