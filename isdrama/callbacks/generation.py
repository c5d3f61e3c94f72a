"""The generation protocol between validation callbacks and a training stage, and batch helpers.

A LightningModule whose validation should be scored on audio implements
:class:`ValidationAudioGenerator`::

    def generate_validation_audio(self, batch) -> GeneratedAudio: ...

``batch`` is a validation batch exactly as the validation dataloader yields it (for the drama
stage a :class:`~isdrama.data.dataset.DramaBatch`), already on ``self.device`` and possibly cut to
its first lines (see :func:`take_lines`). The method runs under ``torch.no_grad`` with the module
in eval mode; it should synthesise every line of the batch (the drama stage: prompt + content +
pose -> flow sampling -> tokens -> EnCodec decoder) and return the waveforms with the ground
truth (e.g. the decoded ground-truth tokens, or the original wavs) at ONE sample rate.

Shapes: B lines, S / S_gt / S_p samples, channel 0 = left, 1 = right.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Mapping, Optional, Protocol, Sequence, runtime_checkable

import torch

#: the method a LightningModule must implement to be scored by ValidationAudioCallback
GENERATE_METHOD = "generate_validation_audio"

__all__ = ["GENERATE_METHOD", "GeneratedAudio", "ValidationAudioGenerator", "batch_size_of", "take_lines", "to_device"]


@dataclass
class GeneratedAudio:
    """Generated binaural audio of B validation lines and what it is compared with.

    Attributes:
        wav: (B, 2, S) float generated waveforms, zero-padded after ``lengths``.
        lengths: (B,) valid samples of each generated line.
        sample_rate: sample rate (Hz) of every waveform here.
        names: B line names (e.g. ``DramaBatch.keys``); used as captions and file names.
        gt_wav: (B, 2, S_gt) ground-truth binaural audio (needed by every metric except ``cer``).
        gt_lengths: (B,) valid ground-truth samples; None = S_gt for all.
        prompt_wav: (B, C, S_p) speaker-prompt audio, C = 1 or 2 (``sim_prompt``); None = no prompts.
        prompt_lengths: (B,) valid prompt samples; None = S_p for all; 0 = this line has no prompt.
        texts: B reference transcripts (``cer``/``wer``); None or an empty string = not scored.
    """

    wav: torch.Tensor
    lengths: torch.Tensor
    sample_rate: int
    names: Sequence[str]
    gt_wav: Optional[torch.Tensor] = None
    gt_lengths: Optional[torch.Tensor] = None
    prompt_wav: Optional[torch.Tensor] = None
    prompt_lengths: Optional[torch.Tensor] = None
    texts: Optional[Sequence[Optional[str]]] = None

    def __len__(self) -> int:
        return int(self.wav.shape[0])

    def validate(self) -> "GeneratedAudio":
        """Check shapes and types; fill default lengths; lengths become CPU long tensors. Returns self.

        Raises ValueError naming the field and what was expected.
        """
        where = f"{GENERATE_METHOD}() returned GeneratedAudio with"
        if not isinstance(self.wav, torch.Tensor) or self.wav.ndim != 3 or self.wav.shape[1] != 2:
            raise ValueError(f"{where} wav of shape {tuple(getattr(self.wav, 'shape', ()))}; expected (B, 2, S)")
        if not self.wav.is_floating_point():
            raise ValueError(f"{where} wav of dtype {self.wav.dtype}; expected a float waveform")
        B = self.wav.shape[0]
        if isinstance(self.sample_rate, bool) or int(self.sample_rate) != self.sample_rate or self.sample_rate <= 0:
            raise ValueError(f"{where} sample_rate={self.sample_rate!r}; expected a positive integer (Hz)")
        self.sample_rate = int(self.sample_rate)
        if len(self.names) != B:
            raise ValueError(f"{where} {len(self.names)} names for {B} lines")
        self.lengths = self._lengths("lengths", self.lengths, B, self.wav.shape[-1], allow_zero=False)
        if self.gt_wav is not None:
            if (
                not isinstance(self.gt_wav, torch.Tensor)
                or self.gt_wav.ndim != 3
                or tuple(self.gt_wav.shape[:2]) != (B, 2)
            ):
                raise ValueError(
                    f"{where} gt_wav of shape {tuple(getattr(self.gt_wav, 'shape', ()))}; expected ({B}, 2, S_gt)"
                )
            self.gt_lengths = self._lengths("gt_lengths", self.gt_lengths, B, self.gt_wav.shape[-1], allow_zero=False)
        elif self.gt_lengths is not None:
            raise ValueError(f"{where} gt_lengths but no gt_wav")
        if self.prompt_wav is not None:
            p = self.prompt_wav
            if not isinstance(p, torch.Tensor) or p.ndim != 3 or p.shape[0] != B or p.shape[1] not in (1, 2):
                raise ValueError(
                    f"{where} prompt_wav of shape {tuple(getattr(p, 'shape', ()))}; expected ({B}, 1 or 2, S_p)"
                )
            self.prompt_lengths = self._lengths("prompt_lengths", self.prompt_lengths, B, p.shape[-1], allow_zero=True)
        if self.texts is not None and len(self.texts) != B:
            raise ValueError(f"{where} {len(self.texts)} texts for {B} lines")
        return self

    @staticmethod
    def _lengths(name: str, value: Optional[torch.Tensor], B: int, n: int, allow_zero: bool) -> torch.Tensor:
        if value is None:
            return torch.full((B,), n, dtype=torch.long)
        value = torch.as_tensor(value).detach().to("cpu", torch.long).reshape(-1)
        low = 0 if allow_zero else 1
        if value.numel() != B or bool((value < low).any()) or bool((value > n).any()):
            raise ValueError(
                f"{GENERATE_METHOD}() returned GeneratedAudio with {name}={value.tolist()}; "
                f"expected {B} values in [{low}, {n}]"
            )
        return value

    def take(self, n: int) -> "GeneratedAudio":
        """The first ``n`` lines (a new object; tensors are views)."""

        def cut(x):
            return None if x is None else x[:n]

        return GeneratedAudio(
            self.wav[:n],
            self.lengths[:n],
            self.sample_rate,
            list(self.names)[:n],
            cut(self.gt_wav),
            cut(self.gt_lengths),
            cut(self.prompt_wav),
            cut(self.prompt_lengths),
            None if self.texts is None else list(self.texts)[:n],
        )


@runtime_checkable
class ValidationAudioGenerator(Protocol):
    """What a LightningModule implements to be scored by ValidationAudioCallback."""

    def generate_validation_audio(self, batch: Any) -> GeneratedAudio:
        """Synthesise every line of a validation batch (on the module's device, eval mode, no grad)."""
        ...


def batch_size_of(batch: Any) -> int:
    """Lines in a batch: ``len()`` of a DramaBatch-like object, dim 0 of the first tensor of a
    tensor / mapping / tuple / list / dataclass; raises TypeError when there is no way to tell."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        values = list(batch.values())
    elif isinstance(batch, (list, tuple)):
        values = list(batch)
    elif hasattr(batch, "__len__"):
        return len(batch)
    elif is_dataclass(batch):
        values = [getattr(batch, f.name) for f in fields(batch)]
    else:
        values = []
    for v in values:
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            return int(v.shape[0])
    raise TypeError(
        f"cannot count the lines of a validation batch of type {type(batch).__name__}: give it "
        f"__len__, or make it a tensor / dict / tuple holding (B, ...) tensors"
    )


def _is_drama_batch(batch: Any) -> bool:
    from isdrama.data.dataset import DramaBatch

    return isinstance(batch, DramaBatch)


def _head(value: Any, n: int) -> Any:
    """value[:n]; a tensor is copied (a view would keep the whole batch alive)."""
    return value[:n].clone() if isinstance(value, torch.Tensor) else value[:n]


def take_lines(batch: Any, n: int) -> Any:
    """The first ``n`` lines of a batch, or the batch itself when it cannot be cut (then the
    callback crops the generated output instead). A DramaBatch is cut field by field (its
    ``speakers`` vocabulary is kept whole); a tensor on dim 0; another dataclass, a mapping / tuple /
    list of tensors per entry, entries that are lists of B items are cut too. Cut tensors are copies, so
    the kept lines do not pin the whole batch's memory."""
    size = batch_size_of(batch)
    if n >= size:
        return batch
    if _is_drama_batch(batch):
        out = copy.copy(batch)
        for f in fields(batch):
            if f.name == "speakers":
                continue
            value = getattr(batch, f.name)
            if value is not None:
                setattr(out, f.name, _head(value, n))
        return out
    if isinstance(batch, torch.Tensor):
        return _head(batch, n)

    def cut(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == size:
            return _head(v, n)
        if isinstance(v, list) and len(v) == size:
            return v[:n]
        return v

    if is_dataclass(batch) and not isinstance(batch, type):  # e.g. the codec stage's CodecBatch
        out = copy.copy(batch)
        for f in fields(batch):
            setattr(out, f.name, cut(getattr(batch, f.name)))
        return out

    if isinstance(batch, Mapping):
        return {k: cut(v) for k, v in batch.items()}
    if isinstance(batch, tuple) and not hasattr(batch, "_fields"):
        return tuple(cut(v) for v in batch)
    if isinstance(batch, list):
        return [cut(v) for v in batch]
    return batch


def to_device(batch: Any, device: torch.device | str) -> Any:
    """A copy of ``batch`` on ``device`` (the original is left alone, even for objects whose
    ``.to`` works in place, such as DramaBatch)."""
    from lightning_fabric.utilities.apply_func import move_data_to_device

    if is_dataclass(batch) and not isinstance(batch, type):
        batch = copy.copy(batch)
    return move_data_to_device(batch, device)
