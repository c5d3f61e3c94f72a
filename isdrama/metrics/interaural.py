"""Per-line interaural summaries: broadband ILD and the GCC-PHAT ITD, and the lateral side of a pose.

Used to check that a codec round trip (or a generator) puts a voice on the right side: the sign of
the broadband ILD / ITD of a line against the original's, or against the pose it was given.
Convention: positive ILD = the left ear (channel 0) is louder; positive ITD = the sound reaches
the left ear first.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def broadband_ild_db(wav: np.ndarray, eps: float = 1e-12) -> float:
    """10 log10(sum L^2 / sum R^2) of a binaural line (2, S), in dB."""
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 2 or wav.shape[0] != 2:
        raise ValueError(f"expected binaural audio (2, S), got shape {wav.shape}")
    left, right = (wav**2).sum(axis=1)
    return float(10.0 * np.log10((left + eps) / (right + eps)))


def gcc_phat_itd(wav: np.ndarray, sample_rate: int, max_itd_s: float = 1e-3, interp: int = 4) -> float:
    """Interaural time difference (s) of a binaural line (2, S) by GCC-PHAT.

    The cross-power spectrum X_R conj(X_L) is whitened (|.| = 1, PHAT) and transformed back, zero-
    padded ``interp`` times for sub-sample lags; the lag of its maximum within +-``max_itd_s`` is
    returned, positive when the left ear leads.
    """
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 2 or wav.shape[0] != 2:
        raise ValueError(f"expected binaural audio (2, S), got shape {wav.shape}")
    n = wav.shape[1]
    size = 1 << int(np.ceil(np.log2(max(2, 2 * n))))
    L, R = np.fft.rfft(wav[0], size), np.fft.rfft(wav[1], size)
    cross = R * np.conj(L)
    cross /= np.abs(cross) + 1e-12
    corr = np.fft.irfft(cross, size * interp)
    max_lag = max(1, int(round(max_itd_s * sample_rate * interp)))
    lags = np.concatenate([corr[-max_lag:], corr[: max_lag + 1]])  # lags -max_lag .. +max_lag
    return float((int(np.argmax(lags)) - max_lag) / (sample_rate * interp))


def lateral_side(pose: np.ndarray, margin_deg: float = 22.5) -> Optional[int]:
    """+1 (left), -1 (right) or None (within ``margin_deg`` of the median plane) from a pose track
    (T, >= 3) in listener-centric metres (x to the right): the side of the mean position, exactly
    as the pose-encoder probes label it (:func:`isdrama.lit.probes.pose_labels`, ``left_right``)."""
    import torch

    from isdrama.lit.probes import LabelConfig, pose_labels

    xyz = torch.as_tensor(np.asarray(pose, dtype=np.float64)[:, :3])
    if xyz.shape[0] == 0:
        return None
    xyz = torch.nn.functional.pad(xyz, (0, 6))[None]  # (1, T, 9): only x, y, z are read
    label = int(
        pose_labels(xyz, torch.ones(xyz.shape[:2], dtype=torch.bool), LabelConfig(lateral_margin_deg=margin_deg))[
            "left_right"
        ]
    )
    return None if label < 0 else (-1 if label == 1 else 1)  # probes: 1 = x > 0 = right
