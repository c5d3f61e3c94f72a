"""IPD / ILD features and their mean absolute error between ground-truth and generated binaural audio.

Two modes (SpatialMAEConfig.mode):

``reference``: the published ISDrama evaluation, to the last detail
(../shared/reference/isdrama-facts.md section 3). Per file: resample to 32 kHz with torchaudio's
windowed sinc (its defaults), centred Hann STFT (n_fft 1024, hop 320, reflect padding),
IPD = angle(R) - angle(L) NOT wrapped, ILD = 20 log10((|R| + 1e-10) / (|L| + 1e-10)), each (T, 513)
times the Slaney mel matrix (128 bands, 50-14000 Hz) -> (T, 128). Per pair: crop both to the
common top-left, mean |a - b|, divided AGAIN by the cropped frame count T. Reported figure:
mean over files x 100 (``SpatialMAEResult.ipd_mae``). It scales as 1 / clip length.
Numerical note (true of the published script too): with centred reflect padding, frame 0 is an
even-symmetric frame whose exact spectrum is real, so its unwrapped phases are 0 or +-pi decided
by floating-point rounding; two FFT implementations can disagree there by 2 pi per bin. Every
other frame agrees to float precision; frame 0's share of the score is ~1/T^2 (below 1e-6 in x100
units for 10-s clips, ~2e-5 for 2-s clips), and it vanishes for files that start with digital
silence. bench/bench_eval_spatial.py and the tests document and bound it.

``corrected`` (default): per STFT bin, the IPD error is the wrapped phase difference
|angle(exp(i (ipd_gt - ipd_gen)))| in radians and the ILD error |ild_gt - ild_gen| in dB; bins
whose ground-truth binaural energy is more than ``energy_mask_db`` below the file's loudest bin
are left out (silent bins carry no spatial cue); errors are averaged within each mel band (the
same triangles, normalised to weight 1) over time, then over bands. No extra division by T, so the
score does not depend on clip length. Units: radians (IPD), dB (ILD).

Both modes are batched (zero padding + length masks, exactly equal to per-file computation),
vectorised in torch, on CPU or GPU, and also return per-band error vectors (128) for plots.

Files on CPU (`spatial_mae_files`, device "cpu"): each pair is computed whole by one of
``workers`` threads, single-threaded (torch intra-op threads are 1 while the call runs and restored
afterwards): 16-bit PCM read as int16, torchaudio's resampling kernel applied as a banded matrix
product (`SincResampler`, rows gathered straight from the interleaved samples, 1/32768 folded into
the matrix: bit-identical), only the frames of the common crop, STFT in cache-sized blocks of
``chunk_frames`` frames, phases and magnitudes by numpy's SIMD arctan2 / complex abs (as the
published script's numpy path), scratch buffers reused; reference mode projects each block on the
mel matrix and sums |.| over its frames (no (T, F) buffers). Same formulas and operation order as
the batched path; per-file values agree with it to ~1e-7 relative.

Shapes: B pairs, N samples, F = 513 bins, T frames, M = 128 mel bands.
"""
from __future__ import annotations

import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Sequence

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

__all__ = [
    "SpatialCueConfig",
    "SpatialMAEConfig",
    "SpatialFeatures",
    "PairErrors",
    "SpatialMAEResult",
    "SpatialCueExtractor",
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
    dtype: str = "float32"  #: "float32" (as published) or "float64"
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
            return (np.nanmean(self.ipd_bands, axis=0) * self.scale,
                    np.nanmean(self.ild_bands, axis=0) * self.scale)

    def summary(self) -> dict:
        unit = ("published x100 units (scales as 1 / clip length)" if self.mode == "reference"
                else "IPD radians, ILD dB")
        return {"mode": self.mode, "n_files": len(self.names), "ipd_mae": self.ipd_mae,
                "ild_mae": self.ild_mae, "unit": unit}


class SpatialCueExtractor:
    """Batched IPD/ILD computation on one device; holds the constants (mel matrices).

    Reference-mode pair errors use linearity: |P_gt - P_gen| with P = cue @ mel equals
    |(cue_gt - cue_gen) @ mel| on the common frames, so each pair needs two projections, and the
    ILD difference is one log: 20 log10((|R_g|+e)(|L_h|+e) / ((|L_g|+e)(|R_h|+e))). Equal to the
    published per-file computation to float rounding.
    """

    def __init__(self, cfg: SpatialCueConfig, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = dtype
        mel = slaney_mel_matrix(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max,
                                dtype=dtype, device=self.device)  # (F, M)
        self.mel = mel
        used = torch.nonzero(mel.abs().sum(dim=1) > 0).flatten()
        self.lo, self.hi = int(used.min()), int(used.max()) + 1  # bins with a non-zero weight
        self._mel = mel[self.lo : self.hi].contiguous()  # (F', M)
        norm = mel / mel.sum(dim=0, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        self._mel_norm = norm[self.lo : self.hi].contiguous()  # (F', M), columns sum to 1

    def project(self, x: torch.Tensor, normalised: bool = False) -> torch.Tensor:
        """(B, T, F') values on the used bins -> (B, T, M) = x @ mel (weighted band sums)."""
        return torch.matmul(x, self._mel_norm if normalised else self._mel)

    def to_analysis_rate(self, wav: torch.Tensor, lengths: torch.Tensor, sample_rate: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, N) at ``sample_rate`` -> (B, 2, N') at cfg.sample_rate (torchaudio sinc)."""
        wav = wav.to(device=self.device, dtype=self.dtype)
        return resample_batch(wav, lengths.to(self.device), int(sample_rate), self.cfg.sample_rate)

    def spectra(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 2, N) at the analysis rate -> real, imag (B, 2, T, F') on the used bins, frames (B,)."""
        B = wav.shape[0]
        spec, frames = stft_batch(wav.reshape(B * 2, -1), lengths.repeat_interleave(2),
                                  self.cfg.n_fft, self.cfg.hop_length, self.cfg.win_length)
        ri = torch.view_as_real(spec[..., self.lo : self.hi])  # (2B, T, F', 2)
        re = ri[..., 0].contiguous()  # contiguous planes: strided atan2 is several times slower
        im = ri[..., 1].contiguous()
        return re.view(B, 2, *re.shape[1:]), im.view(B, 2, *im.shape[1:]), frames[::2]

    def _phase_mag(self, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase atan2(im, re) and magnitude |re + i im| (hypot, as np.abs), same shapes."""
        phase = torch.atan2(im, re)
        mag = torch.hypot(re, im)
        return phase, mag

    def bin_cues(self, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, T, F') -> unwrapped IPD (rad) and ILD (dB), each (B, T, F'), as published."""
        phase, mag = self._phase_mag(re, im)
        ipd = phase[:, 1] - phase[:, 0]
        eps = self.cfg.ild_eps
        ild = torch.log10((mag[:, 1] + eps).div_(mag[:, 0] + eps)).mul_(20.0)
        return ipd, ild

    def features(self, wav: torch.Tensor, lengths: torch.Tensor, sample_rate: int) -> SpatialFeatures:
        """The published features: (B, 2, N) -> ipd, ild (B, T, M) and frames (B,)."""
        wav, lengths = self.to_analysis_rate(wav, lengths, sample_rate)
        re, im, frames = self.spectra(wav, lengths)
        ipd, ild = self.bin_cues(re, im)
        return SpatialFeatures(self.project(ipd), self.project(ild), frames)

    def pair_errors(self, gt: torch.Tensor, gt_len: torch.Tensor, gt_sr: int,
                    gen: torch.Tensor, gen_len: torch.Tensor, gen_sr: int,
                    mode: Mode, energy_mask_db: Optional[float]) -> PairErrors:
        """Errors of B pairs: gt, gen (B, 2, N*) with lengths (B,) at their sample rates."""
        gt, gt_len = self.to_analysis_rate(gt, gt_len, gt_sr)
        gen, gen_len = self.to_analysis_rate(gen, gen_len, gen_sr)
        B = gt.shape[0]
        n = max(gt.shape[-1], gen.shape[-1])
        both = gt.new_zeros(2 * B, 2, n)
        both[:B, :, : gt.shape[-1]] = gt
        both[B:, :, : gen.shape[-1]] = gen
        re, im, frames = self.spectra(both, torch.cat([gt_len, gen_len]))
        return self.errors_from_spectra(re, im, frames, mode, energy_mask_db)

    def errors_from_spectra(self, re: torch.Tensor, im: torch.Tensor, frames: torch.Tensor,
                            mode: Mode, energy_mask_db: Optional[float]) -> PairErrors:
        """re, im (2B, 2, T, F'): rows [:B] ground truth, [B:] generated; frames (2B,)."""
        B = re.shape[0] // 2
        T = re.shape[2]
        common = torch.minimum(frames[:B], frames[B:])  # (B,) the top-left crop
        valid = (torch.arange(T, device=re.device) < common.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
        energy = None
        if mode == "corrected" and energy_mask_db is not None:
            energy = (re[:B].square() + im[:B].square()).sum(1)  # (B, T, F') ground-truth power
        phase, mag = self._phase_mag(re, im)
        del re, im
        d_ipd = (phase[:B, 1] - phase[:B, 0]).sub_(phase[B:, 1] - phase[B:, 0])  # (B, T, F')
        del phase
        eps = self.cfg.ild_eps
        mag.add_(eps)
        d_ild = torch.log10((mag[:B, 1] * mag[B:, 0]).div_(mag[:B, 0] * mag[B:, 1])).mul_(20.0)
        del mag
        if mode == "reference":
            return self._reference_errors(d_ipd, d_ild, valid, common)
        return self._corrected_errors(d_ipd, d_ild, energy, valid, common, energy_mask_db)

    def _reference_errors(self, d_ipd, d_ild, valid, common) -> PairErrors:
        sums = [self.project(d).abs_().mul_(valid).sum(1) for d in (d_ipd, d_ild)]  # (B, M) over the crop
        return self.reference_from_sums(*sums, common)

    def reference_from_sums(self, ipd_sums: torch.Tensor, ild_sums: torch.Tensor, common: torch.Tensor
                            ) -> PairErrors:
        """Published per-pair figures from sum over the crop's frames of |P_gt - P_gen| per band,
        (B, M) each (any float dtype), and the crop's frame counts (B,): mean over frames, then
        divided AGAIN by T (published)."""
        t = common.to(ipd_sums.dtype).unsqueeze(1)  # (B, 1)
        ipd_b, ild_b = ((x / t / t).to(self.dtype) for x in (ipd_sums, ild_sums))
        return PairErrors(ipd_b.mean(-1), ild_b.mean(-1), ipd_b, ild_b, common)

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
            bands.append(torch.where(den > 0, num / den.clamp_min(torch.finfo(self.dtype).tiny),
                                     torch.full_like(num, float("nan"))))
        ipd_b, ild_b = bands
        return PairErrors(ipd_b.nanmean(-1), ild_b.nanmean(-1), ipd_b, ild_b, common)


def _torch_dtype(name: str) -> torch.dtype:
    return torch.float64 if name == "float64" else torch.float32


def _lengths(wav: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    if lengths is None:
        return torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long)
    return torch.as_tensor(lengths, dtype=torch.long).cpu()


def ipd_ild_features(wav: torch.Tensor, sample_rate: int, lengths: Optional[torch.Tensor] = None,
                     cfg: Optional[SpatialCueConfig] = None, device: str = "cpu",
                     dtype: str = "float32") -> SpatialFeatures:
    """Published IPD/ILD mel features of a batch.

    wav (B, 2, N) binaural (0 = left) at ``sample_rate``; lengths (B,) true lengths (default N)
    -> SpatialFeatures(ipd (B, T, 128), ild (B, T, 128), frames (B,)); rows >= frames[b] are padding.
    """
    check_binaural_tensor(wav)
    ext = SpatialCueExtractor(cfg or SpatialCueConfig(), device, _torch_dtype(dtype))
    return ext.features(wav, _lengths(wav, lengths), sample_rate)


def spatial_errors(gt: torch.Tensor, gen: torch.Tensor, sample_rate: int,
                   gt_lengths: Optional[torch.Tensor] = None, gen_lengths: Optional[torch.Tensor] = None,
                   cfg: Optional[SpatialMAEConfig] = None, gen_sample_rate: Optional[int] = None,
                   extractor: Optional[SpatialCueExtractor] = None) -> PairErrors:
    """IPD/ILD errors of B pairs of waveforms (for validation callbacks).

    gt, gen (B, 2, N) binaural (0 = left), zero-padded, with optional true lengths (B,), at
    ``sample_rate`` (``gen_sample_rate`` if different) -> PairErrors on cfg.device. Pass an
    ``extractor`` to reuse its constants across calls.
    """
    cfg = cfg or SpatialMAEConfig()
    check_binaural_tensor(gt, "gt")
    check_binaural_tensor(gen, "gen")
    if gt.shape[0] != gen.shape[0]:
        raise ValueError(f"spatial_errors: {gt.shape[0]} ground-truth vs {gen.shape[0]} generated items")
    ext = extractor or SpatialCueExtractor(cfg.cues, cfg.device, _torch_dtype(cfg.dtype))
    return ext.pair_errors(gt, _lengths(gt, gt_lengths), sample_rate, gen, _lengths(gen, gen_lengths),
                           gen_sample_rate or sample_rate, cfg.mode, cfg.energy_mask_db)


def _load_at_rate(path: Path, sample_rate: int, min_samples: int, dtype: str) -> np.ndarray:
    """Read + resample one file on the CPU (torchaudio's resampler); errors name the file."""
    wav, sr = load_binaural(path)
    wav = wav.astype(np.float64) if dtype == "float64" else wav
    if sr != sample_rate:  # one file at a time: torchaudio's conv is slower on stacked batches
        wav = AF.resample(torch.from_numpy(wav), sr, sample_rate).numpy()
    if wav.shape[-1] < min_samples:
        raise AudioInputError(path, f"{wav.shape[-1]} samples at {sample_rate} Hz: too short for a "
                                    f"centred STFT, need at least {min_samples}")
    return wav


def spatial_mae_files(gt_paths: Sequence[Path | str], gen_paths: Sequence[Path | str],
                      cfg: Optional[SpatialMAEConfig] = None, names: Optional[Sequence[str]] = None,
                      progress: bool = False) -> SpatialMAEResult:
    """IPD/ILD MAE over paired binaural files (gt_paths[i] vs gen_paths[i]).

    CPU: ``cfg.workers`` threads each compute whole pairs (see the module notes). Other devices:
    files are read with soundfile and resampled to 32 kHz on ``io_threads`` threads,
    ``prefetch_batches`` batches ahead of the computation, batched by ``cfg.batch_size``.
    Errors name the offending file.
    """
    cfg = cfg or SpatialMAEConfig()
    gt_paths = [Path(p) for p in gt_paths]
    gen_paths = [Path(p) for p in gen_paths]
    if len(gt_paths) != len(gen_paths):
        raise ValueError(f"spatial_mae_files: {len(gt_paths)} ground-truth vs {len(gen_paths)} generated files")
    if not gt_paths:
        raise ValueError("spatial_mae_files: no files to compare")
    names = list(names) if names is not None else [p.stem for p in gt_paths]
    ext = SpatialCueExtractor(cfg.cues, cfg.device, _torch_dtype(cfg.dtype))
    pairs = list(zip(gt_paths, gen_paths))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), desc=f"IPD/ILD ({cfg.mode})", unit="pair")
    try:
        if ext.device.type == "cpu":
            results = _run_cpu(ext, pairs, cfg, bar)
        else:
            results = _run_batched(ext, pairs, cfg, bar)
    finally:
        if bar is not None:
            bar.close()

    def cat(attr: str) -> np.ndarray:
        return torch.cat([getattr(r, attr) for r in results]).cpu().numpy()

    return SpatialMAEResult(cfg.mode, names, cat("ipd"), cat("ild"), cat("ipd_bands"), cat("ild_bands"),
                            cat("frames"))


def _run_batched(ext: SpatialCueExtractor, pairs: list[tuple[Path, Path]], cfg: SpatialMAEConfig,
                 bar) -> list[PairErrors]:
    """Accelerator path: files read + resampled on threads, computed in batches of pairs."""
    chunks = [pairs[i : i + cfg.batch_size] for i in range(0, len(pairs), cfg.batch_size)]
    results: list[PairErrors] = []
    need = cfg.cues.n_fft // 2 + 1

    def submit(chunk):  # one future per file, in gt/gen interleaved order
        return [readers.submit(_load_at_rate, p, cfg.cues.sample_rate, need, cfg.dtype)
                for pair in chunk for p in pair]

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
    return ext.errors_from_spectra(re, im, frames, cfg.mode, cfg.energy_mask_db)


# --------------------------------------------------------------------------------------------
# CPU file path: one pair at a time per worker thread, cache-sized STFT blocks, reused buffers

def _run_cpu(ext: SpatialCueExtractor, pairs: list[tuple[Path, Path]], cfg: SpatialMAEConfig,
             bar) -> list[PairErrors]:
    workers = min(len(pairs), cfg.workers or torch.get_num_threads())
    local = threading.local()  # one Workspace per thread, freed with this call

    def one(g: Path, h: Path) -> PairErrors:
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = Workspace()
        return _pair_errors_cpu(ext, g, h, cfg, ws)

    if workers <= 1:  # this thread, torch's intra-op threads as they are
        out = []
        for g, h in pairs:
            out.append(one(g, h))
            if bar is not None:
                bar.update(1)
        return out
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel over pairs, not inside ops: no oversubscription, no barriers
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(one, g, h) for g, h in pairs]
            out = []
            for f in futures:
                out.append(f.result())
                if bar is not None:
                    bar.update(1)
            return out
    finally:
        torch.set_num_threads(prev)


def _read_for_analysis(path: Path, cues: SpatialCueConfig, dtype: torch.dtype, ws: Workspace, slot: int):
    """Read one file into the workspace -> (interleaved samples, sample rate, resampler or None,
    length n at the analysis rate). Errors name the file."""
    frames, sr = read_binaural_frames(path, ws, f"file{slot}")
    rs = sinc_resampler(sr, cues.sample_rate, dtype) if sr != cues.sample_rate else None
    n = rs.output_length(frames.shape[0]) if rs is not None else frames.shape[0]
    half = cues.n_fft // 2
    if n < half + 1:
        raise AudioInputError(path, f"{n} samples at {cues.sample_rate} Hz: too short for a centred STFT, "
                                    f"need at least {half + 1}")
    return frames, sr, rs, n


def _signal_span(rs, N: int, n: int, half: int) -> int:
    """Row length that `_analysis_signal` needs: the padded signal and the resampler's scratch."""
    if rs is not None and rs.banded:
        _, rows, _ = rs.layout(N)
        return max(half + rows * rs.n * rs.R, n + 2 * half)
    return n + 2 * half


def _analysis_signal(frames: np.ndarray, sr: int, rs, n: int, P: torch.Tensor, slot: int,
                     cues: SpatialCueConfig, ws: Workspace) -> None:
    """Write a file's reflect-padded 32 kHz signal into P (2, >= `_signal_span`) at
    [n_fft // 2, n_fft // 2 + n). Resampling as torchaudio's (bit-identical where the banded
    product is, torchaudio itself otherwise)."""
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


def _pair_errors_cpu(ext: SpatialCueExtractor, gt_path: Path, gen_path: Path, cfg: SpatialMAEConfig,
                     ws: Workspace) -> PairErrors:
    """Errors of one pair, computed on the calling thread (see the module notes)."""
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
    reference = cfg.mode == "reference"
    if reference:  # per block: project, |.|, sum over frames: no (T, F') buffers
        cue_buf = ws.tensor("cue", (2, step, F_), dtype)
        band_sums = torch.zeros(2, ext.mel.shape[1], dtype=torch.float64)  # (IPD, ILD / 20) x M
    else:
        cue_buf = ws.tensor("cue", (2, T, F_), dtype)
    energy = None
    if not reference and cfg.energy_mask_db is not None:
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
        cue = cue_buf[:, :nt] if reference else cue_buf[:, t0 : t0 + nt]  # (2, nt, F')
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
        if reference:
            band_sums += ext.project(cue).abs_().sum(1)  # sum over frames of |(P_gt - P_gen)|
    common = torch.tensor([T])
    if reference:  # ILD x 20 after the sums: |20 x| = 20 |x|
        return ext.reference_from_sums(band_sums[:1], band_sums[1:] * 20.0, common)
    d_ipd, d_ild = cue_buf[:1], cue_buf[1:].mul_(20.0)
    valid = torch.ones(1, T, 1, dtype=torch.bool)
    return ext._corrected_errors(d_ipd, d_ild, energy, valid, common, cfg.energy_mask_db)
