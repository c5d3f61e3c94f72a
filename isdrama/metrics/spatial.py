"""IPD / ILD features and their mean absolute error between ground-truth and generated binaural audio.

Two modes (SpatialMAEConfig.mode):

``reference``: the published ISDrama evaluation's numbers, computed by the published code path
with its own library (:mod:`isdrama.metrics.spatial_reference`: torchlibrosa's conv1d STFT and
melW, unwrapped IPD, 1e-10-guarded ILD, (T, 128) mel-weighted sums per file; per pair the common
top-left crop, mean |a - b|, divided AGAIN by the cropped frame count T). Reported figure: mean
over files x 100 (``SpatialMAEResult.ipd_mae``). It scales as 1 / clip length. Float32 only, as
published: in near-silent bins that DFT's float32 rounding decides the value, so no faster
arithmetic can give the same numbers; the speed comes from building the published objects once
and computing pairs on worker threads.

``corrected`` (default): per STFT bin, the IPD error is the wrapped phase difference
|angle(exp(i (ipd_gt - ipd_gen)))| in radians and the ILD error |ild_gt - ild_gen| in dB; bins
whose ground-truth binaural energy is more than ``energy_mask_db`` below the file's loudest bin
are left out (silent bins carry no spatial cue); errors are averaged within each mel band (the
same triangles, normalised to weight 1) over time, then over bands. No extra division by T, so the
score does not depend on clip length. Units: radians (IPD), dB (ILD). Computed with an FFT
(`SpatialCueExtractor`), batched (zero padding + length masks, equal to per-file computation),
in torch on CPU or GPU; its definition is ours, so its arithmetic is free.

Files on CPU (`spatial_mae_files`, device "cpu"): each pair is computed whole by one of
``workers`` threads, single-threaded (torch intra-op threads are 1 while the call runs and restored
afterwards, see `_single_threaded_ops`). Corrected mode: 16-bit PCM read as int16, torchaudio's
resampling kernel applied as a banded matrix product (`SincResampler`, rows gathered straight from
the interleaved samples, 1/32768 folded into the matrix: torchaudio's sums, to the last ulp), STFT in cache-sized blocks
of ``chunk_frames`` frames, phases and magnitudes by numpy's SIMD arctan2 / complex abs, scratch
buffers reused; per-file values agree with the batched path to ~1e-7 relative.

Shapes: B pairs, N samples, F = 513 bins, T frames, M = 128 mel bands.
"""

from __future__ import annotations

import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional, Sequence, TypeVar

import numpy as np
import torch
import torchaudio.functional as AF

from isdrama.metrics.audio_prep import (
    AudioInputError,
    Workspace,
    _hann,
    check_binaural_tensor,
    frames_to_float,
    load_binaural,
    pad_stack,
    read_binaural_frames,
    resample_batch,
    sinc_resampler,
    slaney_mel_matrix,
    stft_batch,
)
from isdrama.metrics.spatial_reference import PublishedPairError, PublishedSpatialCues, published_pair_error

__all__ = [
    "SpatialCueConfig",
    "SpatialMAEConfig",
    "SpatialFeatures",
    "PairErrors",
    "SpatialMAEResult",
    "SpatialCueExtractor",
    "spatial_extractor",
    "ipd_ild_features",
    "spatial_errors",
    "spatial_mae_files",
]

Mode = Literal["reference", "corrected"]


@dataclass
class SpatialCueConfig:
    """Analysis parameters of the published IPD/ILD features (defaults = the published values)."""

    sample_rate: int = 32000  #: analysis rate (Hz); inputs are resampled to it
    n_fft: int = 1024  #: FFT size (513 bins)
    hop_length: int = 320  #: hop (10 ms at 32 kHz)
    win_length: int = 1024  #: Hann window length
    n_mels: int = 128  #: mel bands of the projection
    f_min: float = 50.0  #: lowest mel edge (Hz)
    f_max: float = 14000.0  #: highest mel edge (Hz)
    ild_eps: float = 1e-10  #: magnitude floor inside the ILD log ratio


@dataclass
class SpatialMAEConfig:
    """How IPD/ILD MAE is computed and batched."""

    mode: Mode = "corrected"  #: "corrected" (default, length independent) or "reference" (published)
    cues: SpatialCueConfig = field(default_factory=SpatialCueConfig)
    #: corrected mode: drop bins whose ground-truth energy |L|^2 + |R|^2 is more than this many dB
    #: below the file's loudest bin; None keeps every bin
    energy_mask_db: Optional[float] = -60.0
    #: pairs per batch (file API on a GPU; on CPU each worker computes one pair at a time)
    batch_size: int = 2
    device: str = "cpu"  #: torch device of the computation
    dtype: str = "float32"  #: corrected mode: "float32" or "float64" (reference mode is float32, as published)
    io_threads: int = 2  #: GPU: threads reading + resampling files while a batch is computed
    prefetch_batches: int = 4  #: GPU: batches read ahead of the one being computed
    #: CPU file API: pairs computed concurrently, each on one thread (torch intra-op threads are set
    #: to 1 during the call when > 1); None = torch.get_num_threads()
    workers: Optional[int] = None
    chunk_frames: int = 64  #: CPU file API: STFT frames per block (cache-sized)

    def __post_init__(self) -> None:
        if self.mode not in ("reference", "corrected"):
            raise ValueError(f"SpatialMAEConfig.mode: expected 'reference' or 'corrected', got {self.mode!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"SpatialMAEConfig.dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        if self.mode == "reference" and self.dtype != "float32":
            raise ValueError(
                "SpatialMAEConfig.dtype: reference mode computes in float32 as the published "
                f"script does (its numbers depend on it), got {self.dtype!r}"
            )
        if self.batch_size < 1:
            raise ValueError(f"SpatialMAEConfig.batch_size: expected >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"SpatialMAEConfig.workers: expected >= 1 or None, got {self.workers}")
        if self.chunk_frames < 1:
            raise ValueError(f"SpatialMAEConfig.chunk_frames: expected >= 1, got {self.chunk_frames}")


@dataclass
class SpatialFeatures:
    """Published mel-projected features of a batch: ipd, ild (B, T, M); frames (B,) valid rows."""

    ipd: torch.Tensor
    ild: torch.Tensor
    frames: torch.Tensor


@dataclass
class PairErrors:
    """Per-pair errors of a batch (torch tensors on the computation device).

    ipd, ild (B,): the per-file values (reference: mean|a-b| / T; corrected: rad and dB);
    ipd_bands, ild_bands (B, M): the same per mel band (their mean over bands is ipd / ild;
    NaN for a band with no unmasked bin in corrected mode); frames (B,): frames compared.
    """

    ipd: torch.Tensor
    ild: torch.Tensor
    ipd_bands: torch.Tensor
    ild_bands: torch.Tensor
    frames: torch.Tensor


@dataclass
class SpatialMAEResult:
    """Per-file errors (numpy) and the aggregate figures of a set of pairs."""

    mode: Mode
    names: list[str]
    ipd: np.ndarray  #: (N,) per-file IPD error (see PairErrors)
    ild: np.ndarray  #: (N,) per-file ILD error
    ipd_bands: np.ndarray  #: (N, M)
    ild_bands: np.ndarray  #: (N, M)
    frames: np.ndarray  #: (N,) frames compared per pair

    @property
    def scale(self) -> float:
        """x100 in reference mode (the published unit), 1 in corrected mode."""
        return 100.0 if self.mode == "reference" else 1.0

    @property
    def ipd_mae(self) -> float:
        """Reported IPD figure: mean over files (x100 in reference mode; radians in corrected)."""
        return float(np.mean(self.ipd) * self.scale)

    @property
    def ild_mae(self) -> float:
        """Reported ILD figure: mean over files (x100 in reference mode; dB in corrected)."""
        return float(np.mean(self.ild) * self.scale)

    def band_profile(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean per-band errors over files, (M,) each, in the reported unit (for plots); NaN for a
        band that no file had energy in (corrected mode)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bands stay NaN
            return (np.nanmean(self.ipd_bands, axis=0) * self.scale, np.nanmean(self.ild_bands, axis=0) * self.scale)

    def summary(self) -> dict:
        unit = "published x100 units (scales as 1 / clip length)" if self.mode == "reference" else "IPD radians, ILD dB"
        return {
            "mode": self.mode,
            "n_files": len(self.names),
            "ipd_mae": self.ipd_mae,
            "ild_mae": self.ild_mae,
            "unit": unit,
        }


class SpatialCueExtractor:
    """Batched corrected-mode IPD/ILD errors on one device (FFT); holds the mel constants.

    The ILD difference of a pair is one log: 20 log10((|R_g|+e)(|L_h|+e) / ((|L_g|+e)(|R_h|+e))).
    """

    def __init__(self, cfg: SpatialCueConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = dtype
        mel = slaney_mel_matrix(
            cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max, dtype=dtype, device=self.device
        )  # (F, M)
        self.mel = mel
        used = torch.nonzero(mel.abs().sum(dim=1) > 0).flatten()
        self.lo, self.hi = int(used.min()), int(used.max()) + 1  # bins with a non-zero weight
        self._mel = mel[self.lo : self.hi].contiguous()  # (F', M)
        norm = mel / mel.sum(dim=0, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        self._mel_norm = norm[self.lo : self.hi].contiguous()  # (F', M), columns sum to 1

    def project(self, x: torch.Tensor, normalised: bool = False) -> torch.Tensor:
        """(B, T, F') values on the used bins -> (B, T, M) = x @ mel (weighted band sums)."""
        return torch.matmul(x, self._mel_norm if normalised else self._mel)

    def to_analysis_rate(
        self, wav: torch.Tensor, lengths: torch.Tensor, sample_rate: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, N) at ``sample_rate`` -> (B, 2, N') at cfg.sample_rate (torchaudio sinc)."""
        wav = wav.to(device=self.device, dtype=self.dtype)
        return resample_batch(wav, lengths.to(self.device), int(sample_rate), self.cfg.sample_rate)

    def spectra(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 2, N) at the analysis rate -> real, imag (B, 2, T, F') on the used bins, frames (B,)."""
        B = wav.shape[0]
        spec, frames = stft_batch(
            wav.reshape(B * 2, -1),
            lengths.repeat_interleave(2),
            self.cfg.n_fft,
            self.cfg.hop_length,
            self.cfg.win_length,
        )
        ri = torch.view_as_real(spec[..., self.lo : self.hi])  # (2B, T, F', 2)
        re = ri[..., 0].contiguous()  # contiguous planes: strided atan2 is several times slower
        im = ri[..., 1].contiguous()
        return re.view(B, 2, *re.shape[1:]), im.view(B, 2, *im.shape[1:]), frames[::2]

    def _phase_mag(self, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase atan2(im, re) and magnitude |re + i im| (hypot, as np.abs), same shapes."""
        phase = torch.atan2(im, re)
        mag = torch.hypot(re, im)
        return phase, mag

    def pair_errors(
        self,
        gt: torch.Tensor,
        gt_len: torch.Tensor,
        gt_sr: int,
        gen: torch.Tensor,
        gen_len: torch.Tensor,
        gen_sr: int,
        energy_mask_db: Optional[float],
    ) -> PairErrors:
        """Corrected errors of B pairs: gt, gen (B, 2, N*) with lengths (B,) at their sample rates."""
        gt, gt_len = self.to_analysis_rate(gt, gt_len, gt_sr)
        gen, gen_len = self.to_analysis_rate(gen, gen_len, gen_sr)
        B = gt.shape[0]
        n = max(gt.shape[-1], gen.shape[-1])
        both = gt.new_zeros(2 * B, 2, n)
        both[:B, :, : gt.shape[-1]] = gt
        both[B:, :, : gen.shape[-1]] = gen
        re, im, frames = self.spectra(both, torch.cat([gt_len, gen_len]))
        return self.errors_from_spectra(re, im, frames, energy_mask_db)

    def errors_from_spectra(
        self, re: torch.Tensor, im: torch.Tensor, frames: torch.Tensor, energy_mask_db: Optional[float]
    ) -> PairErrors:
        """re, im (2B, 2, T, F'): rows [:B] ground truth, [B:] generated; frames (2B,)."""
        B = re.shape[0] // 2
        T = re.shape[2]
        common = torch.minimum(frames[:B], frames[B:])  # (B,) the top-left crop
        valid = (torch.arange(T, device=re.device) < common.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
        energy = None
        if energy_mask_db is not None:
            energy = (re[:B].square() + im[:B].square()).sum(1)  # (B, T, F') ground-truth power
        phase, mag = self._phase_mag(re, im)
        del re, im
        d_ipd = (phase[:B, 1] - phase[:B, 0]).sub_(phase[B:, 1] - phase[B:, 0])  # (B, T, F')
        del phase
        eps = self.cfg.ild_eps
        mag.add_(eps)
        d_ild = torch.log10((mag[:B, 1] * mag[B:, 0]).div_(mag[:B, 0] * mag[B:, 1])).mul_(20.0)
        del mag
        return self._corrected_errors(d_ipd, d_ild, energy, valid, common, energy_mask_db)

    def _corrected_errors(self, d_ipd, d_ild, energy, valid, common, energy_mask_db) -> PairErrors:
        """Band means of the wrapped IPD / absolute ILD errors over the kept bins (consumes d_ipd,
        d_ild in place). The frame sums come before the mel weights (both linear): one
        (B, F') x (F', M) product per cue instead of a (B, T, F') one."""
        B, T, F_ = d_ipd.shape
        in_crop = valid.to(self.dtype)  # (B, T, 1)
        if energy is not None:
            peak = (energy if bool(valid.all()) else energy * in_crop).flatten(1).amax(1).view(B, 1, 1)
            # 0/1 in the float dtype straight from the comparison (a bool mask costs several passes)
            mask = torch.ge(energy, peak * 10.0 ** (energy_mask_db / 10.0), out=torch.empty_like(energy))
            mask.mul_(in_crop)  # (B, T, F')
        else:
            mask = in_crop.expand(B, T, F_)
        e_ipd = d_ipd.add_(math.pi).remainder_(2 * math.pi).sub_(math.pi).abs_()  # wrapped, rad
        e_ild = d_ild.abs_()  # dB
        den = self.project(mask.sum(1), normalised=True)  # (B, M) weight of the kept bins per band
        bands = []
        for e in (e_ipd, e_ild):
            num = self.project(e.mul_(mask).sum(1), normalised=True)
            bands.append(
                torch.where(
                    den > 0, num / den.clamp_min(torch.finfo(self.dtype).tiny), torch.full_like(num, float("nan"))
                )
            )
        ipd_b, ild_b = bands
        return PairErrors(ipd_b.nanmean(-1), ild_b.nanmean(-1), ipd_b, ild_b, common)


def _torch_dtype(name: str) -> torch.dtype:
    return torch.float64 if name == "float64" else torch.float32


def _lengths(wav: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    if lengths is None:
        return torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long)
    return torch.as_tensor(lengths, dtype=torch.long).cpu()


def spatial_extractor(cfg: SpatialMAEConfig, device: Optional[torch.device | str] = None):
    """The computation of ``cfg.mode`` on ``device`` (default cfg.device), to reuse across calls:
    `PublishedSpatialCues` (reference) or `SpatialCueExtractor` (corrected). Both expose
    ``mel`` (F, M) and ``device``."""
    device = cfg.device if device is None else device
    if cfg.mode == "reference":
        return PublishedSpatialCues.from_config(cfg.cues, device)
    return SpatialCueExtractor(cfg.cues, device, _torch_dtype(cfg.dtype))


def ipd_ild_features(
    wav: torch.Tensor,
    sample_rate: int,
    lengths: Optional[torch.Tensor] = None,
    cfg: Optional[SpatialCueConfig] = None,
    device: str = "cpu",
) -> SpatialFeatures:
    """Published IPD/ILD mel features of a batch (computed per item, as published).

    wav (B, 2, N) binaural (0 = left) at ``sample_rate``; lengths (B,) true lengths (default N)
    -> SpatialFeatures(ipd (B, T, 128), ild (B, T, 128), frames (B,)); rows >= frames[b] are zeros.
    """
    check_binaural_tensor(wav)
    pub = PublishedSpatialCues.from_config(cfg or SpatialCueConfig(), device)
    lengths = _lengths(wav, lengths)
    feats = [
        pub.signal_features(wav[b, :, : int(lengths[b])].float().cpu().contiguous(), sample_rate, f"batch item {b}")
        for b in range(wav.shape[0])
    ]
    frames = torch.tensor([f[0].shape[0] for f in feats], dtype=torch.long)
    T, M = int(frames.max()), feats[0][0].shape[1]
    ipd, ild = torch.zeros(len(feats), T, M), torch.zeros(len(feats), T, M)
    for b, (fi, fl) in enumerate(feats):
        ipd[b, : fi.shape[0]] = torch.from_numpy(fi)
        ild[b, : fl.shape[0]] = torch.from_numpy(fl)
    return SpatialFeatures(ipd, ild, frames)


def _stack_published(errors: Sequence[PublishedPairError], device: torch.device | str = "cpu") -> PairErrors:
    """Per-pair published figures -> PairErrors (float32, as published)."""

    def t(values):
        return torch.as_tensor(np.asarray(values, dtype=np.float32), device=device)

    return PairErrors(
        t([e.ipd for e in errors]),
        t([e.ild for e in errors]),
        t(np.stack([e.ipd_bands for e in errors])),
        t(np.stack([e.ild_bands for e in errors])),
        torch.tensor([e.frames for e in errors], dtype=torch.long, device=device),
    )


def spatial_errors(
    gt: torch.Tensor,
    gen: torch.Tensor,
    sample_rate: int,
    gt_lengths: Optional[torch.Tensor] = None,
    gen_lengths: Optional[torch.Tensor] = None,
    cfg: Optional[SpatialMAEConfig] = None,
    gen_sample_rate: Optional[int] = None,
    extractor=None,
) -> PairErrors:
    """IPD/ILD errors of B pairs of waveforms (for validation callbacks).

    gt, gen (B, 2, N) binaural (0 = left), zero-padded, with optional true lengths (B,), at
    ``sample_rate`` (``gen_sample_rate`` if different) -> PairErrors on cfg.device. Pass an
    ``extractor`` (`spatial_extractor`) to reuse its constants across calls. Reference mode
    computes each item alone at its true length, as the published script computes each file.
    """
    cfg = cfg or SpatialMAEConfig()
    check_binaural_tensor(gt, "gt")
    check_binaural_tensor(gen, "gen")
    if gt.shape[0] != gen.shape[0]:
        raise ValueError(f"spatial_errors: {gt.shape[0]} ground-truth vs {gen.shape[0]} generated items")
    ext = extractor or spatial_extractor(cfg)
    gt_len, gen_len = _lengths(gt, gt_lengths), _lengths(gen, gen_lengths)
    gen_sr = gen_sample_rate or sample_rate
    if cfg.mode == "reference":

        def item(x: torch.Tensor, n: torch.Tensor, sr: int, what: str):
            return ext.signal_features(x[:, : int(n)].float().contiguous(), sr, what)

        errors = [
            published_pair_error(
                item(gt[b], gt_len[b], sample_rate, f"gt item {b}"), item(gen[b], gen_len[b], gen_sr, f"gen item {b}")
            )
            for b in range(gt.shape[0])
        ]
        return _stack_published(errors, cfg.device)
    return ext.pair_errors(gt, gt_len, sample_rate, gen, gen_len, gen_sr, cfg.energy_mask_db)


def _load_at_rate(path: Path, sample_rate: int, min_samples: int, dtype: str) -> np.ndarray:
    """Read + resample one file on the CPU (torchaudio's resampler); errors name the file."""
    wav, sr = load_binaural(path)
    wav = wav.astype(np.float64) if dtype == "float64" else wav
    if sr != sample_rate:  # one file at a time: torchaudio's conv is slower on stacked batches
        wav = AF.resample(torch.from_numpy(wav), sr, sample_rate).numpy()
    if wav.shape[-1] < min_samples:
        raise AudioInputError(
            path,
            f"{wav.shape[-1]} samples at {sample_rate} Hz: too short for a centred STFT, need at least {min_samples}",
        )
    return wav


def spatial_mae_files(
    gt_paths: Sequence[Path | str],
    gen_paths: Sequence[Path | str],
    cfg: Optional[SpatialMAEConfig] = None,
    names: Optional[Sequence[str]] = None,
    progress: bool = False,
) -> SpatialMAEResult:
    """IPD/ILD MAE over paired binaural files (gt_paths[i] vs gen_paths[i]).

    Reference mode: the published computation per file (:mod:`isdrama.metrics.spatial_reference`),
    pairs on ``cfg.workers`` threads. Corrected mode on CPU: ``cfg.workers`` threads each compute
    whole pairs (see the module notes); on other devices files are read with soundfile and
    resampled to 32 kHz on ``io_threads`` threads, ``prefetch_batches`` batches ahead of the
    computation, batched by ``cfg.batch_size``. Errors name the offending file.
    """
    cfg = cfg or SpatialMAEConfig()
    gt_paths = [Path(p) for p in gt_paths]
    gen_paths = [Path(p) for p in gen_paths]
    if len(gt_paths) != len(gen_paths):
        raise ValueError(f"spatial_mae_files: {len(gt_paths)} ground-truth vs {len(gen_paths)} generated files")
    if not gt_paths:
        raise ValueError("spatial_mae_files: no files to compare")
    names = list(names) if names is not None else [p.stem for p in gt_paths]
    ext = spatial_extractor(cfg)
    pairs = list(zip(gt_paths, gen_paths))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), desc=f"IPD/ILD ({cfg.mode})", unit="pair")
    try:
        if cfg.mode == "reference":
            errors = _map_pairs(ext.file_pair_error, pairs, cfg.workers, bar)
            results = [_stack_published(errors)]
        elif ext.device.type == "cpu":
            results = _run_cpu(ext, pairs, cfg, bar)
        else:
            results = _run_batched(ext, pairs, cfg, bar)
    finally:
        if bar is not None:
            bar.close()

    def cat(attr: str) -> np.ndarray:
        return torch.cat([getattr(r, attr) for r in results]).cpu().numpy()

    return SpatialMAEResult(cfg.mode, names, cat("ipd"), cat("ild"), cat("ipd_bands"), cat("ild_bands"), cat("frames"))


def _run_batched(
    ext: SpatialCueExtractor, pairs: list[tuple[Path, Path]], cfg: SpatialMAEConfig, bar
) -> list[PairErrors]:
    """Accelerator path (corrected mode): files read + resampled on threads, computed in batches."""
    chunks = [pairs[i : i + cfg.batch_size] for i in range(0, len(pairs), cfg.batch_size)]
    results: list[PairErrors] = []
    need = cfg.cues.n_fft // 2 + 1

    def submit(chunk):  # one future per file, in gt/gen interleaved order
        return [readers.submit(_load_at_rate, p, cfg.cues.sample_rate, need, cfg.dtype) for pair in chunk for p in pair]

    with ThreadPoolExecutor(max_workers=max(1, cfg.io_threads)) as readers:
        window = [submit(c) for c in chunks[: cfg.prefetch_batches + 1]]  # read ahead while computing
        for k, chunk in enumerate(chunks):
            wavs = [f.result() for f in window.pop(0)]
            if k + cfg.prefetch_batches + 1 < len(chunks):
                window.append(submit(chunks[k + cfg.prefetch_batches + 1]))
            results.append(_errors_of_chunk(ext, wavs, cfg))
            if bar is not None:
                bar.update(len(chunk))
    return results


def _errors_of_chunk(ext: SpatialCueExtractor, wavs: list[np.ndarray], cfg: SpatialMAEConfig) -> PairErrors:
    """Errors of one chunk of pairs already at the analysis rate (gt/gen interleaved)."""
    both, lengths = pad_stack(wavs[0::2] + wavs[1::2], dtype=ext.dtype, device=ext.device)
    re, im, frames = ext.spectra(both, lengths)
    return ext.errors_from_spectra(re, im, frames, cfg.energy_mask_db)


# --------------------------------------------------------------------------------------------
# CPU file paths: one pair at a time per worker thread

R = TypeVar("R")


@contextmanager
def _single_threaded_ops() -> Iterator[None]:
    """While the block runs, torch ops use one intra-op thread; restored after, also on error.

    torch's intra-op thread count is process-wide: only the file API, which owns the process's
    CPU for the length of the call, changes it; the tensor API (`spatial_errors`, used during
    training) never does."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _map_pairs(fn: Callable[[Path, Path], R], pairs: list[tuple[Path, Path]], workers: Optional[int], bar) -> list[R]:
    """fn over the pairs, in order: on this thread with torch's threads as they are when one worker
    is asked for, else on ``workers`` threads (default torch.get_num_threads()) computing whole
    pairs, each single-threaded (parallel over pairs, not inside ops: no oversubscription)."""
    workers = min(len(pairs), workers or torch.get_num_threads())
    out: list[R] = []

    def collect(results) -> None:
        for r in results:
            out.append(r)
            if bar is not None:
                bar.update(1)

    if workers <= 1:
        collect(fn(g, h) for g, h in pairs)
        return out
    with _single_threaded_ops(), ThreadPoolExecutor(max_workers=workers) as pool:
        collect(f.result() for f in [pool.submit(fn, g, h) for g, h in pairs])
    return out


def _run_cpu(ext: SpatialCueExtractor, pairs: list[tuple[Path, Path]], cfg: SpatialMAEConfig, bar) -> list[PairErrors]:
    """Corrected mode on CPU: one Workspace of scratch buffers per worker thread."""
    local = threading.local()  # one Workspace per thread, freed with this call

    def one(g: Path, h: Path) -> PairErrors:
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = Workspace()
        return _pair_errors_cpu(ext, g, h, cfg, ws)

    return _map_pairs(one, pairs, cfg.workers, bar)


def _read_for_analysis(path: Path, cues: SpatialCueConfig, dtype: torch.dtype, ws: Workspace, slot: int):
    """Read one file into the workspace -> (interleaved samples, sample rate, resampler or None,
    length n at the analysis rate). Errors name the file."""
    frames, sr = read_binaural_frames(path, ws, f"file{slot}")
    rs = sinc_resampler(sr, cues.sample_rate, dtype) if sr != cues.sample_rate else None
    n = rs.output_length(frames.shape[0]) if rs is not None else frames.shape[0]
    half = cues.n_fft // 2
    if n < half + 1:
        raise AudioInputError(
            path, f"{n} samples at {cues.sample_rate} Hz: too short for a centred STFT, need at least {half + 1}"
        )
    return frames, sr, rs, n


def _signal_span(rs, N: int, n: int, half: int) -> int:
    """Row length that `_analysis_signal` needs: the padded signal and the resampler's scratch."""
    if rs is not None and rs.banded:
        _, rows, _ = rs.layout(N)
        return max(half + rows * rs.n * rs.R, n + 2 * half)
    return n + 2 * half


def _analysis_signal(
    frames: np.ndarray, sr: int, rs, n: int, P: torch.Tensor, slot: int, cues: SpatialCueConfig, ws: Workspace
) -> None:
    """Write a file's reflect-padded 32 kHz signal into P (2, >= `_signal_span`) at
    [n_fft // 2, n_fft // 2 + n). Resampling as torchaudio's (the banded product where the ratio
    allows it, torchaudio itself otherwise)."""
    N = frames.shape[0]
    half = cues.n_fft // 2
    if rs is None:
        frames_to_float(frames, P[:, half : half + n].numpy())
    elif rs.banded:
        _, rows, total = rs.layout(N)
        int16 = frames.dtype == np.int16
        padded = ws.tensor(f"input{slot}", (total, 2), torch.int16 if int16 else P.dtype)
        w = rs.width
        padded[:w] = 0
        padded[w + N :] = 0
        np.copyto(padded[w : w + N].numpy(), frames, casting="same_kind")
        scratch = ws.tensor("resample_rows", (rows * rs.matrix.shape[0],), P.dtype)
        rs.run(padded, rows, P[:, half : half + rows * rs.n * rs.R], scratch)
    else:
        wav = frames_to_float(frames, ws.tensor(f"input{slot}", (2, N), P.dtype).numpy())
        P[:, half : half + n] = AF.resample(torch.from_numpy(wav), sr, cues.sample_rate)
    # centred STFT: reflect padding at the signal's own length (numpy/librosa "reflect")
    P[:, :half] = P[:, half + 1 : 2 * half + 1].flip(-1)
    P[:, half + n : n + 2 * half] = P[:, n - 1 : n - 1 + half].flip(-1)


def _pair_errors_cpu(
    ext: SpatialCueExtractor, gt_path: Path, gen_path: Path, cfg: SpatialMAEConfig, ws: Workspace
) -> PairErrors:
    """Corrected errors of one pair, computed on the calling thread (see the module notes)."""
    cues, dtype = cfg.cues, ext.dtype
    half = cues.n_fft // 2
    files = [_read_for_analysis(p, cues, dtype, ws, i) for i, p in enumerate((gt_path, gen_path))]
    width = max(_signal_span(rs, fr.shape[0], n, half) for fr, _, rs, n in files)
    signal = ws.tensor("signal", (4, width), dtype)  # gt L, gt R, gen L, gen R
    for i, (fr, sr, rs, n) in enumerate(files):
        _analysis_signal(fr, sr, rs, n, signal[2 * i : 2 * i + 2], i, cues, ws)
    T = min(1 + n // cues.hop_length for *_, n in files)  # the common (top-left) crop
    views = signal.unfold(-1, cues.n_fft, cues.hop_length)  # (4, >= T, n_fft)
    window = _hann(cues.win_length, cues.n_fft, dtype, "cpu")
    lo, hi = ext.lo, ext.hi
    F_ = hi - lo
    step = min(cfg.chunk_frames, T)
    cue_buf = ws.tensor("cue", (2, T, F_), dtype)
    energy = None
    if cfg.energy_mask_db is not None:
        energy = ws.tensor("energy", (1, T, F_), dtype)
    eps = cues.ild_eps
    frames_buf = ws.tensor("frames", (4, step, cues.n_fft), dtype)
    phase_buf = ws.tensor("phase", (4, step, F_), dtype).numpy()
    mag_buf = ws.tensor("mag", (4, step, F_), dtype).numpy()
    tmp_buf = ws.tensor("tmp", (2, step, F_), dtype).numpy()
    for t0 in range(0, T, step):
        nt = min(step, T - t0)
        frames = frames_buf[:, :nt]
        torch.mul(views[:, t0 : t0 + nt], window, out=frames)
        spec = torch.fft.rfft(frames, dim=-1)[..., lo:hi].numpy()  # (4, nt, F') complex
        phase, mag, tmp = phase_buf[:, :nt], mag_buf[:, :nt], tmp_buf[:, :nt]
        np.arctan2(spec.imag, spec.real, out=phase)  # = np.angle, as the published numpy path
        np.absolute(spec, out=mag)
        if energy is not None:  # ground-truth power |L|^2 + |R|^2, before magnitudes change
            e = energy[0, t0 : t0 + nt].numpy()
            for c in range(2):
                np.square(spec.real[c], out=tmp[0])
                np.square(spec.imag[c], out=tmp[1])
                if c == 0:
                    np.add(tmp[0], tmp[1], out=e)
                else:
                    np.add(tmp[0], tmp[1], out=tmp[0])
                    e += tmp[0]
        cue = cue_buf[:, t0 : t0 + nt]  # (2, nt, F')
        ipd = cue[0].numpy()
        np.subtract(phase[1], phase[0], out=ipd)  # (R - L) of gt minus (R - L) of gen
        np.subtract(phase[3], phase[2], out=tmp[0])
        ipd -= tmp[0]
        mag += eps
        ild = cue[1].numpy()  # log10((|R_g|+e)(|L_h|+e) / ((|L_g|+e)(|R_h|+e))); x 20 later
        np.multiply(mag[1], mag[2], out=ild)
        np.multiply(mag[0], mag[3], out=tmp[0])
        ild /= tmp[0]
        np.log10(ild, out=ild)
    common = torch.tensor([T])
    d_ipd, d_ild = cue_buf[:1], cue_buf[1:].mul_(20.0)
    valid = torch.ones(1, T, 1, dtype=torch.bool)
    return ext._corrected_errors(d_ipd, d_ild, energy, valid, common, cfg.energy_mask_db)
