"""Figures of the validation-audio callback: binaural spectrograms and IPD/ILD error per mel band.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot, no global state,
no display needed). :func:`figure_to_rgb` turns one into an (H, W, 3) uint8 image for
``wandb.Image``; :func:`save_figure` writes a PNG atomically. Both close nothing global.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "SpectrogramConfig",
    "band_error_figure",
    "figure_to_rgb",
    "log_spectrogram",
    "save_figure",
    "spectrogram_figure",
]


@dataclass
class SpectrogramConfig:
    """Display spectrogram settings."""

    n_fft: int = 1024  #: FFT size
    hop_length: int = 256  #: hop (samples)
    top_db: float = 80.0  #: dynamic range shown below the figure's loudest bin
    dpi: int = 100  #: figure resolution
    width: float = 10.0  #: figure width (inches)


def log_spectrogram(wav: torch.Tensor, n_fft: int, hop_length: int) -> np.ndarray:
    """(C, N) waveform -> (C, F, T) power in dB (Hann window, centred)."""
    wav = wav.detach().float().cpu()
    n_fft = min(n_fft, max(16, wav.shape[-1]))  # very short clips: a shorter window
    spec = torch.stft(
        wav, n_fft, hop_length=min(hop_length, n_fft), window=torch.hann_window(n_fft), center=True, return_complex=True
    )
    return (10.0 * torch.log10(spec.abs().square().clamp_min(1e-12))).numpy()


def spectrogram_figure(
    gen: torch.Tensor,
    sample_rate: int,
    gt: Optional[torch.Tensor] = None,
    title: str = "",
    cfg: Optional[SpectrogramConfig] = None,
) -> Figure:
    """Left / right spectrograms of a generated line (2, N) and, when given, its ground truth (2, N_gt).

    Rows: left ear, right ear; columns: ground truth (if any), generated. One colour scale.
    """
    cfg = cfg or SpectrogramConfig()
    columns = [("ground truth", gt)] if gt is not None else []
    columns.append(("generated", gen))
    specs = [(name, log_spectrogram(w, cfg.n_fft, cfg.hop_length), w.shape[-1]) for name, w in columns]
    vmax = max(float(s.max()) for _, s, _ in specs)
    fig = Figure(figsize=(cfg.width, 5.0), dpi=cfg.dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(specs), squeeze=False, sharey=True)
    image = None
    for c, (name, spec, n) in enumerate(specs):
        for ear, ear_name in enumerate(("left", "right")):
            ax = axes[ear][c]
            image = ax.imshow(
                spec[ear],
                origin="lower",
                aspect="auto",
                cmap="magma",
                vmin=vmax - cfg.top_db,
                vmax=vmax,
                extent=(0.0, n / sample_rate, 0.0, sample_rate / 2000.0),
            )
            ax.set_title(f"{name}: {ear_name}", fontsize=9)
            ax.set_ylabel("kHz" if c == 0 else "")
            ax.set_xlabel("s" if ear == 1 else "")
    fig.colorbar(image, ax=axes, shrink=0.8, label="dB")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def ild_over_time(wav: torch.Tensor, sample_rate: int, frame_s: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Broadband ILD (dB, 10 log10 of left / right energy) per ``frame_s`` window of (2, N):
    window centres (s) and ILDs; windows without energy in an ear are NaN."""
    x = wav.detach().double().cpu().numpy()
    hop = max(1, int(round(frame_s * sample_rate)))
    n = x.shape[-1] // hop
    if n == 0:
        return np.zeros(0), np.zeros(0)
    energy = (x[:, : n * hop].reshape(2, n, hop) ** 2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ild = 10.0 * np.log10(energy[0] / energy[1])
    ild[~np.isfinite(ild)] = np.nan
    return (np.arange(n) + 0.5) * hop / sample_rate, ild


def ild_curve_figure(
    gen: torch.Tensor, sample_rate: int, gt: Optional[torch.Tensor] = None, title: str = "", dpi: int = 100
) -> Figure:
    """The interaural level difference over time of a generated line and its ground truth."""
    fig = Figure(figsize=(8.0, 2.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, wav in (("ground truth", gt), ("generated", gen)):
        if wav is not None:
            t, ild = ild_over_time(wav, sample_rate)
            ax.plot(t, ild, linewidth=1.0, label=name)
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xlabel("s")
    ax.set_ylabel("ILD L/R (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def band_error_figure(
    ipd_bands: Optional[np.ndarray],
    ild_bands: Optional[np.ndarray],
    band_hz: np.ndarray,
    ipd_unit: str,
    ild_unit: str,
    title: str = "",
    dpi: int = 100,
) -> Figure:
    """IPD and ILD error per mel band (M,) against the band centre frequency (Hz, log axis).

    NaN values (no energy in the band) are left as gaps. Either profile may be None.
    """
    panels = [
        (n, v, u)
        for n, v, u in (("IPD error", ipd_bands, ipd_unit), ("ILD error", ild_bands, ild_unit))
        if v is not None
    ]
    fig = Figure(figsize=(8.0, 2.6 * max(1, len(panels))), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, len(panels)), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (name, values, unit) in zip(axes, panels):
        ax.plot(band_hz, np.asarray(values, dtype=np.float64), marker=".", linewidth=1.0)
        ax.set_xscale("log")
        ax.set_ylabel(f"{name} ({unit})")
        ax.grid(True, which="both", alpha=0.3)
    axes[-1].set_xlabel("mel band centre (Hz)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Render a figure -> (H, W, 3) uint8."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: Path | str) -> Path:
    """Write a figure as PNG (atomically); returns the path."""
    from isdrama.utils.io import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path
