"""Measured HRIRs from a SOFA file: loading, resampling, onset alignment and interpolation.

Any SimpleFreeFieldHRIR SOFA file is accepted by path (read with ``sofar``; no database names,
nothing is downloaded). The default is MIT KEMAR (normal pinna) from Debian's libmysofa1:
710 directions, 44.1 kHz, 1.4 m.

Processing, in order:
1. directions -> unit vectors in the listener frame (x right, y front, z up; SOFA azimuth is
   counter-clockwise, +90 = left); receivers ordered (left, right) from ReceiverPosition.
2. resample every HRIR to the output rate (48 kHz) with a polyphase filter.
3. remove the measured interaural delay (the lag of the left/right cross-correlation peak) and
   the bulk onset delay: the pair is shifted so that its onset (first sample above
   ``onset_threshold_db`` of its peak) lies at ``pre_delay`` samples. The interaural time
   difference is then re-created by the renderer from the true mouth-to-ear distances, so the
   delay the audio carries is exactly the geometry of the pose file.
4. truncate to ``taps`` samples with a short fade-out; scale all filters by one factor so that
   the energy averaged over directions and ears is 1 (diffuse-field level).

Interpolation between measured directions is barycentric on the spherical Delaunay
triangulation (the convex hull of the unit vectors): a direction gets the three HRIRs of the
triangle that contains it, weighted by its barycentric coordinates.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly
from scipy.spatial import ConvexHull, cKDTree

from isdrama.data.schema import DATA_SAMPLE_RATE, DataError
from isdrama.data.synth.geometry import sofa_cartesian_to_listener, sofa_to_listener, unit

#: MIT KEMAR normal pinna as installed by Debian's libmysofa1.
DEFAULT_SOFA = Path("/usr/share/libmysofa/MIT_KEMAR_normal_pinna.sofa")
#: Nearest measured directions whose triangles are searched first for a query direction.
NEAREST_CANDIDATES = 3
#: Largest interaural delay searched when removing a measured ITD (s); a human head has < 0.8 ms.
ITD_SEARCH = 1.2e-3


@dataclass(frozen=True)
class HRTFConfig:
    """How measured HRIRs are prepared for rendering."""

    sofa_path: str = str(DEFAULT_SOFA)  #: SOFA file (SimpleFreeFieldHRIR), any path
    sample_rate: int = DATA_SAMPLE_RATE  #: output rate the HRIRs are resampled to (Hz)
    taps: int = 256  #: HRIR length after alignment (samples at sample_rate)
    pre_delay: int = 16  #: samples kept before the aligned onset
    onset_threshold_db: float = -20.0  #: onset = first sample above this level re the peak
    fade_out: int = 32  #: half-Hann fade at the end of each truncated HRIR


@dataclass(frozen=True, eq=False)
class HRTFSet:
    """Onset-aligned HRIRs on a triangulated sphere of directions.

    directions: (M, 3) unit vectors in the listener frame; hrirs: (M, 2, K) float64 (left,
    right); triangles: (F, 3) indices into directions; the acoustic onset of every filter lies
    at ``pre_delay`` samples.
    """

    directions: np.ndarray
    hrirs: np.ndarray
    triangles: np.ndarray
    sample_rate: int
    pre_delay: int
    source_path: str
    measured_distance: float

    @functools.cached_property
    def _inverse_triangles(self) -> np.ndarray:
        """(F, 3, 3) inverses of the triangle vertex matrices (vertices as columns)."""
        verts = self.directions[self.triangles]  # (F, 3 vertices, 3 xyz)
        return np.linalg.inv(np.transpose(verts, (0, 2, 1)))

    @functools.cached_property
    def _candidates(self) -> tuple[cKDTree, np.ndarray]:
        """KD-tree of the directions and, per direction, the triangles touching it (padded -1)."""
        touching: list[list[int]] = [[] for _ in range(len(self.directions))]
        for f, tri in enumerate(self.triangles):
            for v in tri:
                touching[v].append(f)
        table = np.full((len(touching), max(map(len, touching))), -1, dtype=np.int64)
        for v, faces in enumerate(touching):
            table[v, : len(faces)] = faces
        return cKDTree(self.directions), table

    def _barycentric(self, dirs: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Barycentric coordinates (N, C, 3) of dirs (N, 3) in candidate faces (N, C)."""
        return np.einsum("ncij,nj->nci", self._inverse_triangles[faces], dirs)

    def weights(self, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Barycentric interpolation weights for directions (N, 3) -> (idx (N, 3), w (N, 3)).

        The containing triangle is searched among those touching the nearest measured
        directions, then among all triangles for the rare direction not found there. Weights
        are non-negative and sum to 1.
        """
        dirs = unit(np.atleast_2d(np.asarray(directions, dtype=np.float64)))
        tree, table = self._candidates
        _, near = tree.query(dirs, k=NEAREST_CANDIDATES)
        faces = table[near].reshape(len(dirs), -1)
        bary = np.where((faces >= 0)[..., None], self._barycentric(dirs, np.maximum(faces, 0)), -np.inf)
        best = np.argmax(bary.min(axis=-1), axis=1)
        face = faces[np.arange(len(dirs)), best]
        b = bary[np.arange(len(dirs)), best]
        missed = np.flatnonzero(b.min(axis=-1) < -1e-9)
        if missed.size:
            everything = np.broadcast_to(np.arange(len(self.triangles)), (missed.size, len(self.triangles)))
            full = self._barycentric(dirs[missed], everything)
            pick = np.argmax(full.min(axis=-1), axis=1)
            face[missed] = pick
            b[missed] = full[np.arange(missed.size), pick]
        b = np.clip(b, 0.0, None)
        return self.triangles[face], b / np.maximum(b.sum(axis=-1, keepdims=True), 1e-12)

    def interpolate(self, directions: np.ndarray) -> np.ndarray:
        """HRIRs for arbitrary directions (N, 3) -> (N, 2, K)."""
        idx, w = self.weights(directions)
        return np.einsum("nj,njek->nek", w, self.hrirs[idx])

    def spectra(self, n_fft: int) -> np.ndarray:
        """rfft of every measured HRIR, (M, 2, n_fft // 2 + 1) complex128 (cached per n_fft)."""
        return _spectra(self, n_fft)

    def interpolate_spectra(self, directions: np.ndarray, n_fft: int) -> np.ndarray:
        """Interpolated HRTFs for directions (N, 3) -> (N, 2, n_fft // 2 + 1) complex."""
        idx, w = self.weights(directions)
        spec = self.spectra(n_fft)
        return np.einsum("nj,njef->nef", w, spec[idx])

    @property
    def taps(self) -> int:
        return self.hrirs.shape[-1]


@functools.lru_cache(maxsize=8)
def _spectra(hrtf: HRTFSet, n_fft: int) -> np.ndarray:
    return np.fft.rfft(hrtf.hrirs, n=n_fft, axis=-1)


def _sofa_error(path: Path, message: str) -> DataError:
    return DataError(path, f"SOFA file {message}")


def _read_sofa(path: Path):
    """Open a SOFA file with sofar; DataError naming the file when that fails."""
    if not path.is_file():
        raise _sofa_error(
            path,
            "not found (pass the path of a SimpleFreeFieldHRIR .sofa file, "
            f"e.g. {DEFAULT_SOFA} from Debian's libmysofa1)",
        )
    try:
        import sofar
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise _sofa_error(path, "cannot be read: the 'sofar' package is not installed") from exc
    try:
        return sofar.read_sofa(str(path), verify=False, verbose=False)
    except Exception as exc:  # sofar/netCDF raise many types on a bad file
        raise _sofa_error(path, f"is not a readable SOFA (netCDF-4) file: {type(exc).__name__}: {exc}") from exc


def _field(sofa, path: Path, name: str) -> np.ndarray:
    try:
        return np.asarray(getattr(sofa, name))
    except AttributeError as exc:
        raise DataError(path, "SOFA file lacks a required variable", name) from exc


def _directions(sofa, path: Path) -> tuple[np.ndarray, float]:
    """(M, 3) unit source directions in the listener frame and the median source distance."""
    pos = _field(sofa, path, "SourcePosition").astype(np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise DataError(path, f"expected shape (M, 3), got {pos.shape}", "SourcePosition")
    kind = str(getattr(sofa, "SourcePosition_Type", "spherical")).lower()
    if kind.startswith("spherical"):
        dirs = sofa_to_listener(pos[:, 0], pos[:, 1])
        distance = float(np.median(pos[:, 2]))
    elif kind.startswith("cartesian"):
        listener = sofa_cartesian_to_listener(pos)
        distance = float(np.median(np.linalg.norm(listener, axis=-1)))
        dirs = unit(listener)
    else:
        raise DataError(path, f"unsupported coordinate type {kind!r} (spherical or cartesian)", "SourcePosition_Type")
    return dirs, distance


def _left_right_order(sofa, path: Path, n_receivers: int) -> list[int]:
    """Receiver indices (left, right); SOFA's y axis points left."""
    if n_receivers != 2:
        raise DataError(path, f"expected 2 receivers (ears), got {n_receivers}", "Data_IR")
    rec = getattr(sofa, "ReceiverPosition", None)
    if rec is None:
        return [0, 1]
    rec = np.asarray(rec, dtype=np.float64).reshape(2, 3, -1)[:, :, 0]
    return [0, 1] if rec[0, 1] >= rec[1, 1] else [1, 0]


def _interaural_lags(hrirs: np.ndarray, max_lag: int) -> np.ndarray:
    """Lag (samples, + = right later) maximising the left/right cross-correlation, (M, 2, L) -> (M,)."""
    n = 2 * hrirs.shape[-1]
    spec = np.fft.rfft(hrirs, n=n, axis=-1)
    xcorr = np.fft.irfft(spec[:, 1] * np.conj(spec[:, 0]), n=n, axis=-1)  # (M, n), lag k at k
    lags = np.arange(-max_lag, max_lag + 1)
    return lags[np.argmax(xcorr[:, lags % n], axis=1)]


def _shift(x: np.ndarray, start: np.ndarray, length: int) -> np.ndarray:
    """out[i, k] = x[i, start[i] + k] (zero outside x): rows of x (R, L) cut at integer starts."""
    pad = max(int(-start.min()), 0)
    padded = np.pad(x, ((0, 0), (pad, length + max(int(start.max()), 0))))
    return np.take_along_axis(padded, (start + pad)[:, None] + np.arange(length)[None, :], axis=1)


def _align_onsets(hrirs: np.ndarray, cfg: HRTFConfig) -> np.ndarray:
    """Remove each direction's ITD and bulk delay from HRIRs (M, 2, L) -> (M, 2, cfg.taps).

    The right ear is shifted by the lag of the left/right cross-correlation peak (so the pair
    has no interaural delay left: the renderer re-creates it from the geometry), then both ears
    by the common onset (first sample of either ear above ``onset_threshold_db`` of the pair's
    peak), which lands at ``pre_delay``.
    """
    m = hrirs.shape[0]
    lag = _interaural_lags(hrirs, int(np.ceil(ITD_SEARCH * cfg.sample_rate)))
    length = hrirs.shape[-1]
    pair = np.stack([hrirs[:, 0], _shift(hrirs[:, 1], lag, length)], axis=1)  # (M, 2, L)
    peak = np.abs(pair).max(axis=(1, 2), keepdims=True)
    above = (np.abs(pair) >= peak * 10 ** (cfg.onset_threshold_db / 20)).any(axis=1)  # (M, L)
    onset = np.argmax(above, axis=1)
    out = _shift(pair.reshape(2 * m, length), np.repeat(onset - cfg.pre_delay, 2), cfg.taps)
    if cfg.fade_out > 0:
        out[:, -cfg.fade_out :] *= np.hanning(2 * cfg.fade_out)[cfg.fade_out :]
    return out.reshape(m, 2, cfg.taps)


def load_sofa(cfg: HRTFConfig = HRTFConfig()) -> HRTFSet:
    """Read ``cfg.sofa_path`` and prepare its HRIRs (see the module docstring).

    Raises DataError naming the file when it is missing, unreadable or of an unexpected shape.
    """
    path = Path(cfg.sofa_path)
    sofa = _read_sofa(path)
    ir = _field(sofa, path, "Data_IR").astype(np.float64)
    if ir.ndim != 3 or ir.shape[0] < 4:
        raise DataError(path, f"expected (M >= 4 directions, 2 ears, N samples), got {ir.shape}", "Data_IR")
    if not np.isfinite(ir).all() or not np.abs(ir).max(axis=-1).all():
        raise DataError(path, "contains non-finite or all-zero impulse responses", "Data_IR")
    sr = float(np.asarray(_field(sofa, path, "Data_SamplingRate")).ravel()[0])
    if not sr > 0:
        raise DataError(path, f"invalid sampling rate {sr}", "Data_SamplingRate")
    ir = ir[:, _left_right_order(sofa, path, ir.shape[1])]
    dirs, distance = _directions(sofa, path)
    if len(dirs) != len(ir):
        raise DataError(path, f"{len(dirs)} source positions but {len(ir)} impulse responses", "SourcePosition")
    ratio = Fraction(cfg.sample_rate) / Fraction(sr).limit_denominator(1000)
    if ratio != 1:
        ir = resample_poly(ir, ratio.numerator, ratio.denominator, axis=-1)
    hrirs = _align_onsets(ir, cfg)
    hrirs /= np.sqrt(np.mean(np.sum(hrirs**2, axis=-1)))
    hull = ConvexHull(dirs)
    return HRTFSet(
        directions=dirs,
        hrirs=hrirs,
        triangles=hull.simplices.astype(np.int64),
        sample_rate=cfg.sample_rate,
        pre_delay=cfg.pre_delay,
        source_path=str(path),
        measured_distance=distance,
    )


@functools.lru_cache(maxsize=4)
def cached_hrtf(cfg: HRTFConfig) -> HRTFSet:
    """``load_sofa`` once per process and configuration (worker processes reuse it)."""
    return load_sofa(cfg)
