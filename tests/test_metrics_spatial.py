"""IPD/ILD MAE (isdrama.metrics.spatial) against independent expectations.

Reference mode's independent reference is bench/reference_eval_script.py: the published two-stage
computation one file at a time (torchlibrosa objects built per file, .npy files, calculate_mae_time);
the digital-silence cases are in test_metrics_spatial_reference.py. Corrected mode is checked
against float64 numpy/librosa. Fixture signals are white noise through interaural delays and gains.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from float_tolerance import PHASE_ATOL, corrected_spatial_rtol, sum_order_rtol

from isdrama.metrics.audio_prep import (
    AudioInputError,
    SincResampler,
    resample_batch,
    slaney_mel_matrix,
    stft_batch,
)
from isdrama.metrics.spatial import (
    SpatialMAEConfig,
    ipd_ild_features,
    spatial_errors,
    spatial_mae_files,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ref():
    spec = importlib.util.spec_from_file_location("reference_eval_script", ROOT / "bench" / "reference_eval_script.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def spatialise(src: np.ndarray, delay: int, gain_db: float) -> np.ndarray:
    """(N,) -> (N, 2): the right ear delayed by ``delay`` samples (negative: the left) and scaled."""
    pad = np.pad(src, (abs(delay), abs(delay)))
    n, a = len(src), abs(delay)
    left = pad[a + min(delay, 0) : a + min(delay, 0) + n]
    right = pad[a - max(delay, 0) : a - max(delay, 0) + n] * 10 ** (gain_db / 20)
    return np.stack([left, right], axis=1)


def noise_pair(seed: int, seconds: float, sr: int, lead_silence: float = 0.03) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = spatialise(rng.standard_normal(int(seconds * sr)) * 0.1, int(rng.integers(-20, 21)), rng.uniform(-6, 6))
    x[: int(lead_silence * sr)] = 0.0
    return x


def write(path: Path, x: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, subtype=subtype)
    return path


# --------------------------------------------------------------------------------------------
# building blocks


def test_mel_matrix_equals_librosa():
    ours = slaney_mel_matrix(32000, 1024, 128, 50.0, 14000.0).numpy()
    theirs = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=128, fmin=50, fmax=14000, htk=False, norm="slaney").T
    assert ours.shape == (513, 128)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_batched_resample_and_stft_equal_per_signal():
    rng = np.random.default_rng(0)
    lengths = [48000, 30011, 7000]
    sigs = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    batch = torch.zeros(3, max(lengths))
    for i, s in enumerate(sigs):
        batch[i, : len(s)] = torch.from_numpy(s)
    out, new_len = resample_batch(batch, torch.tensor(lengths), 48000, 32000)
    for i, s in enumerate(sigs):
        alone = AF.resample(torch.from_numpy(s), 48000, 32000)
        assert int(new_len[i]) == alone.shape[-1]
        # batched vs one convolution: float32 sums of torchaudio's 23 taps (48 -> 32 kHz) in other
        # orders, |h| summing to < 1.6 per output phase: <= 23 eps x 1.6 max|x| apart
        atol = sum_order_rtol(23) * 1.6 * float(np.abs(s).max())
        torch.testing.assert_close(out[i, : new_len[i]], alone, rtol=0, atol=atol)
        assert torch.all(out[i, new_len[i] :] == 0)
    spec, frames = stft_batch(out, new_len, 1024, 320, 1024)
    for i in range(3):
        x = out[i, : new_len[i]].double().numpy()
        lib = librosa.stft(
            x, n_fft=1024, hop_length=320, win_length=1024, window="hann", center=True, pad_mode="reflect"
        )  # (513, T)
        assert int(frames[i]) == lib.shape[1]
        ours = spec[i, : frames[i]].numpy().T
        np.testing.assert_allclose(ours, lib, rtol=0, atol=2e-4 * np.abs(lib).max())


@pytest.mark.parametrize("orig_sr", [48000, 16000])
def test_sinc_resampler_equals_torchaudio(orig_sr):
    """The banded product equals torchaudio's resampler, from float (C, N) input and from
    interleaved int16 PCM (the file path: 1/32768 folded into the matrix, exact). Each output is
    the same K-tap sum; it is bit-identical where the matrix product and torchaudio's convolution
    add the taps in the same order (this CPU's AVX2 kernels), and within K eps sum|h| max|x| where
    other kernels reorder it (oneDNN's SSE4.1 convolution does)."""
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal((orig_sr // 3 + 17, 2)) * 4000).astype(np.int16)  # (N, 2) as read
    wav = torch.from_numpy(pcm.T.astype(np.float32) / 32768)  # (2, N), soundfile's float read
    theirs = AF.resample(wav, orig_sr, 32000)
    rs = SincResampler(orig_sr, 32000)
    assert rs.banded
    atol = sum_order_rtol(rs.K) * float(rs.matrix.abs().sum(0).max()) * float(wav.abs().max())
    torch.testing.assert_close(rs(wav), theirs, rtol=0, atol=atol)
    nout, rows, total = rs.layout(pcm.shape[0])
    padded = torch.zeros(total, 2, dtype=torch.int16)
    padded[rs.width : rs.width + pcm.shape[0]] = torch.from_numpy(pcm)
    out = torch.empty(2, rows * rs.n * rs.R)
    torch.testing.assert_close(rs.run(padded, rows, out)[:, :nout], theirs, rtol=0, atol=atol)


# --------------------------------------------------------------------------------------------
# reference mode == the published computation


@pytest.fixture(scope="module")
def fixture_pairs(tmp_path_factory):
    """Pairs with different lengths and sample rates (48k, 44.1k, 32k); gt/NAME vs infer/NAME."""
    root = tmp_path_factory.mktemp("pairs")
    specs = [(48000, 3.0, 3.0), (48000, 2.0, 2.6), (44100, 2.5, 2.0), (32000, 1.5, 1.5), (48000, 4.0, 4.0)]
    gts, gens = [], []
    for i, (sr, a, b) in enumerate(specs):
        gts.append(write(root / "gt" / f"p{i}.wav", noise_pair(2 * i, a, sr), sr))
        gens.append(write(root / "infer" / f"p{i}.wav", noise_pair(2 * i + 1, b, sr), sr))
    return root, gts, gens


def test_reference_features_equal_the_published_extraction(ref, fixture_pairs, tmp_path):
    """ipd_ild_features computes what the published extract_feature computes (same torchlibrosa
    objects and operations on the same shapes): equal up to the last bits that an elementwise
    kernel's vector/scalar split may change (float32 atan2 1-ulp, summed over 513 mel weights)."""
    _, gts, _ = fixture_pairs
    for path in gts:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        theirs_ipd, theirs_ild = ref.extract_feature(str(path), str(tmp_path))
        feats = ipd_ild_features(torch.from_numpy(x.T.copy())[None], sr)
        t = int(feats.frames[0])
        assert (t, 128) == theirs_ipd.shape
        np.testing.assert_allclose(feats.ipd[0, :t].numpy(), theirs_ipd, rtol=0, atol=1e-5)
        np.testing.assert_allclose(feats.ild[0, :t].numpy(), theirs_ild, rtol=0, atol=1e-4)


@pytest.mark.parametrize("workers", [1, 2])
def test_reference_mode_equals_published_script(ref, fixture_pairs, tmp_path, workers):
    root, gts, gens = fixture_pairs
    theirs = ref.evaluate_dirs(str(root / "gt"), str(root / "infer"), str(tmp_path))
    ours = spatial_mae_files(gts, gens, SpatialMAEConfig(mode="reference", workers=workers))
    assert ours.names == theirs["names"]
    np.testing.assert_allclose(ours.ipd, theirs["ipd"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(ours.ild, theirs["ild"], rtol=1e-6, atol=0)
    assert ours.ipd_mae == pytest.approx(theirs["ipd_mae_x100"], rel=1e-6)
    assert ours.ild_mae == pytest.approx(theirs["ild_mae_x100"], rel=1e-6)
    # per-band vectors average to the per-file values (float32 means of 128 and T x 128 terms)
    np.testing.assert_allclose(ours.ipd_bands.mean(1), ours.ipd, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# behaviour


def stationary(seconds: float, sr: int = 32000) -> tuple[torch.Tensor, torch.Tensor]:
    """The same stationary pair cut at different lengths: gt and gen from different directions."""
    rng = np.random.default_rng(11)
    n_max = 20 * sr
    src = rng.standard_normal(n_max + 100) * 0.1
    gt = spatialise(src[:n_max], 6, 4.0)
    gen = spatialise(src[:n_max], -3, -2.0)
    n = int(seconds * sr)
    return (torch.from_numpy(gt[:n].T.copy()).float()[None], torch.from_numpy(gen[:n].T.copy()).float()[None])


def test_corrected_is_length_independent_reference_scales_with_one_over_length():
    lengths = [2.0, 5.0, 10.0, 20.0]
    corr, refv = [], []
    for s in lengths:
        gt, gen = stationary(s)
        corr.append(spatial_errors(gt, gen, 32000, cfg=SpatialMAEConfig(mode="corrected")))
        refv.append(spatial_errors(gt, gen, 32000, cfg=SpatialMAEConfig(mode="reference")))
    c_ipd = np.array([float(e.ipd) for e in corr[:3]])
    c_ild = np.array([float(e.ild) for e in corr[:3]])
    assert np.ptp(c_ipd) / c_ipd.mean() < 0.03 and np.ptp(c_ild) / c_ild.mean() < 0.03, (c_ipd, c_ild)
    assert c_ipd.mean() > 0.1 and abs(c_ild.mean() - 6.0) < 1.0  # real errors: ITD differs, ILD 4 vs -2 dB
    r = np.array([float(e.ipd) for e in refv])
    # published figure ~ 1 / length: value x length is constant, ratios follow the lengths
    prod = r * np.array(lengths)
    assert np.ptp(prod) / prod.mean() < 0.05, r
    assert r[0] / r[3] == pytest.approx(10.0, rel=0.05)


def test_corrected_ipd_error_of_a_known_delay():
    """Delaying the right ear by one sample shifts the phase of bin f by 2 pi f / fs: the wrapped
    per-bin error, averaged with each band's normalised mel weights, then over bands."""
    rng = np.random.default_rng(2)
    src = rng.standard_normal(3 * 32000 + 10) * 0.1
    gt = torch.from_numpy(spatialise(src, 0, 0.0).T.copy()).float()[None]
    gen = torch.from_numpy(spatialise(src, 1, 0.0).T.copy()).float()[None]
    err = spatial_errors(gt, gen, 32000, cfg=SpatialMAEConfig(mode="corrected", energy_mask_db=None))
    mel = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=128, fmin=50, fmax=14000).astype(np.float64)
    freqs = np.fft.rfftfreq(1024, 1 / 32000)
    expected_bands = (mel / mel.sum(1, keepdims=True)) @ (2 * np.pi * freqs / 32000)  # (128,)
    np.testing.assert_allclose(err.ipd_bands[0].numpy(), expected_bands, rtol=0.05, atol=4e-3)
    assert float(err.ipd) == pytest.approx(expected_bands.mean(), rel=0.02)
    assert float(err.ild) < 0.2  # magnitudes barely change (window-edge effects only)


def test_identical_files_give_zero(tmp_path):
    x = noise_pair(3, 2.0, 48000)
    a = write(tmp_path / "a.wav", x, 48000)
    b = write(tmp_path / "b.wav", x, 48000)
    for mode in ("reference", "corrected"):
        res = spatial_mae_files([a], [b], SpatialMAEConfig(mode=mode))
        assert res.ipd_mae == 0.0 and res.ild_mae == 0.0


def test_swapped_ears_give_a_large_error():
    gt, _ = stationary(2.0)
    swapped = gt.flip(1)
    rng = np.random.default_rng(5)
    near = gt + torch.from_numpy(rng.standard_normal(gt.shape) * 1e-3).float()  # same scene, -40 dB noise
    cfg = SpatialMAEConfig(mode="corrected")
    e_swap = spatial_errors(gt, swapped, 32000, cfg=cfg)
    e_near = spatial_errors(gt, near, 32000, cfg=cfg)
    assert float(e_swap.ild) == pytest.approx(8.0, abs=0.5)  # ILD +4 dB becomes -4 dB
    assert float(e_swap.ipd) > 1.0 > 0.1 > float(e_near.ipd)
    assert float(e_swap.ild) > 20 * float(e_near.ild)
    rcfg = SpatialMAEConfig(mode="reference")
    assert float(spatial_errors(gt, swapped, 32000, cfg=rcfg).ipd) > 10 * float(
        spatial_errors(gt, near, 32000, cfg=rcfg).ipd
    )


def test_energy_mask_ignores_silent_bins():
    """Spatial cues of a -90 dB noise floor are random; the mask keeps them out of the score."""
    gt, _ = stationary(2.0)
    gt[..., 32000:] = 0.0  # second half: silence
    rng = np.random.default_rng(1)
    floor = lambda: torch.from_numpy(rng.standard_normal(gt.shape) * 3e-6).float()  # noqa: E731
    a, b = gt.clone(), gt.clone()
    a[..., 32000:] = floor()[..., 32000:]
    b[..., 32000:] = floor()[..., 32000:]
    masked = spatial_errors(a, b, 32000, cfg=SpatialMAEConfig(energy_mask_db=-60.0))
    unmasked = spatial_errors(a, b, 32000, cfg=SpatialMAEConfig(energy_mask_db=None))
    assert float(masked.ipd) < 0.05 < 0.5 < float(unmasked.ipd)


@pytest.mark.parametrize("mask_db", [-30.0, None])
def test_corrected_bands_equal_a_direct_numpy_computation(mask_db):
    """Corrected mode per band = sum over (t, f) of w[f, m] * kept * error / sum of w[f, m] * kept,
    w the Slaney triangles normalised per band, error the wrapped IPD difference (rad) / the
    absolute ILD difference (dB), kept = gt energy within mask_db of its peak; float64 librosa."""
    rng = np.random.default_rng(5)
    gt = spatialise(rng.standard_normal(24000) * 0.1, 5, 3.0)
    gt[12000:] *= 0.01  # a quiet second half: -40 dB, dropped by the -30 dB mask
    gen = spatialise(rng.standard_normal(24000) * 0.1, -4, -2.0)
    cues = []
    for x in (gt, gen):
        spec = librosa.stft(x.T, n_fft=1024, hop_length=320, window="hann", center=True, pad_mode="reflect")
        left, right = spec[0].T, spec[1].T  # (T, 513)
        cues.append(
            (
                np.angle(right) - np.angle(left),
                20 * np.log10((np.abs(right) + 1e-10) / (np.abs(left) + 1e-10)),
                np.abs(left) ** 2 + np.abs(right) ** 2,
            )
        )
    (ipd_g, ild_g, energy), (ipd_h, ild_h, _) = cues
    kept = np.ones_like(energy) if mask_db is None else (energy >= energy.max() * 10 ** (mask_db / 10))
    w = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=128, fmin=50, fmax=14000).T  # (513, 128)
    w = w / w.sum(0, keepdims=True)
    e_ipd = np.abs(np.angle(np.exp(1j * (ipd_g - ipd_h))))
    e_ild = np.abs(ild_g - ild_h)
    den = kept.sum(0) @ w
    expect_ipd = ((e_ipd * kept).sum(0) @ w) / den
    expect_ild = ((e_ild * kept).sum(0) @ w) / den
    ours = spatial_errors(
        *(torch.from_numpy(x.T.copy()).float()[None] for x in (gt, gen)),
        32000,
        cfg=SpatialMAEConfig(mode="corrected", energy_mask_db=mask_db),
    )
    np.testing.assert_allclose(ours.ipd_bands[0].numpy(), expect_ipd, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(ours.ild_bands[0].numpy(), expect_ild, rtol=2e-4, atol=1e-4)
    assert float(ours.ipd) == pytest.approx(float(np.mean(expect_ipd)), rel=1e-4)


def test_tensor_api_batched_with_lengths_equals_one_by_one():
    gts, gens = [], []
    for i, (a, b) in enumerate([(1.0, 1.2), (2.0, 2.0), (0.7, 0.5)]):
        gts.append(torch.from_numpy(noise_pair(i, a, 32000).T.copy()).float())
        gens.append(torch.from_numpy(noise_pair(10 + i, b, 32000).T.copy()).float())

    def stack(xs):
        out = torch.zeros(len(xs), 2, max(x.shape[-1] for x in xs))
        for i, x in enumerate(xs):
            out[i, :, : x.shape[-1]] = x
        return out, torch.tensor([x.shape[-1] for x in xs])

    G, gl = stack(gts)
    H, hl = stack(gens)
    for mode in ("reference", "corrected"):
        cfg = SpatialMAEConfig(mode=mode)
        # corrected: float32 sums in other orders over <= 201 frames (2 s), see float_tolerance
        rtol, atol = (1e-5, 1e-9) if mode == "reference" else (corrected_spatial_rtol(201)[0], PHASE_ATOL)
        batched = spatial_errors(G, H, 32000, gl, hl, cfg=cfg)
        for i in range(3):
            single = spatial_errors(gts[i][None], gens[i][None], 32000, cfg=cfg)
            torch.testing.assert_close(batched.ipd[i], single.ipd[0], rtol=rtol, atol=atol)
            torch.testing.assert_close(batched.ild[i], single.ild[0], rtol=rtol, atol=1e-9)
            assert int(batched.frames[i]) == int(single.frames[0])


@pytest.mark.parametrize("mode", ["reference", "corrected"])
def test_cpu_file_path_equals_tensor_path(tmp_path, mode):
    """The CPU file path (per-pair threads; corrected: int16 / float reads, blockwise STFT) gives
    the values of the tensor path on the same audio: PCM-16 and float files, 48 and 32 kHz,
    unequal lengths."""
    specs = [(48000, "PCM_16", 2.0, 2.3), (48000, "FLOAT", 1.7, 1.2), (32000, "PCM_16", 1.1, 1.1)]
    gts, gens, expect = [], [], []
    cfg = SpatialMAEConfig(mode=mode, workers=2, chunk_frames=16)
    for i, (sr, subtype, a, b) in enumerate(specs):
        g = write(tmp_path / "gt" / f"p{i}.wav", noise_pair(3 * i, a, sr), sr, subtype)
        h = write(tmp_path / "infer" / f"p{i}.wav", noise_pair(3 * i + 1, b, sr), sr, subtype)
        gts.append(g)
        gens.append(h)
        x, y = (torch.from_numpy(sf.read(p, dtype="float32", always_2d=True)[0].T.copy())[None] for p in (g, h))
        expect.append(spatial_errors(x, y, sr, cfg=cfg))
    ours = spatial_mae_files(gts, gens, cfg)
    # corrected: float32 sums in other orders (blocks of 16 frames, numpy's arctan2 / log10) over
    # <= 231 frames (2.3 s), see float_tolerance
    pair_rtol, band_rtol, pair_atol, band_atol = 2e-5, 1e-4, 0.0, 1e-9
    if mode == "corrected":
        (pair_rtol, band_rtol), pair_atol, band_atol = corrected_spatial_rtol(231), PHASE_ATOL, PHASE_ATOL
    np.testing.assert_allclose(ours.ipd, [float(e.ipd[0]) for e in expect], rtol=pair_rtol, atol=pair_atol)
    np.testing.assert_allclose(ours.ild, [float(e.ild[0]) for e in expect], rtol=pair_rtol)
    np.testing.assert_allclose(
        ours.ipd_bands, torch.cat([e.ipd_bands for e in expect]).numpy(), rtol=band_rtol, atol=band_atol
    )
    assert list(ours.frames) == [int(e.frames[0]) for e in expect]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_equals_cpu():
    gt, gen = stationary(2.0)
    for mode in ("reference", "corrected"):
        cpu = spatial_errors(gt, gen, 32000, cfg=SpatialMAEConfig(mode=mode))
        gpu = spatial_errors(gt.cuda(), gen.cuda(), 32000, cfg=SpatialMAEConfig(mode=mode, device="cuda"))
        torch.testing.assert_close(gpu.ipd.cpu(), cpu.ipd, rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(gpu.ild.cpu(), cpu.ild, rtol=1e-3, atol=1e-6)


# --------------------------------------------------------------------------------------------
# bad input: every error names the file


def test_bad_inputs_name_the_file(tmp_path):
    good = write(tmp_path / "good.wav", noise_pair(0, 1.0, 48000), 48000)
    mono = write(tmp_path / "mono.wav", np.zeros(48000), 48000)
    nan = np.full((4800, 2), np.nan)
    nanf = write(tmp_path / "nan.wav", nan, 48000, subtype="FLOAT")
    empty = write(tmp_path / "empty.wav", np.zeros((0, 2)), 48000)
    short = write(tmp_path / "short.wav", np.zeros((100, 2)), 48000)
    for bad in (mono, nanf, empty, short, tmp_path / "missing.wav"):
        with pytest.raises(AudioInputError) as info:
            spatial_mae_files([good], [bad])
        assert bad.name in str(info.value)
    with pytest.raises(ValueError, match="1 ground-truth vs 2 generated"):
        spatial_mae_files([good], [good, good])


def test_bad_tensors_are_refused():
    gt, gen = stationary(1.0)
    bad = gen.clone()
    bad[0, 1, 5] = float("nan")
    with pytest.raises(AudioInputError, match="gen.*NaN"):
        spatial_errors(gt, bad, 32000)
    with pytest.raises(AudioInputError, match="gt.*shape"):
        spatial_errors(gt[:, :1], gen, 32000)
    with pytest.raises(ValueError, match="mode"):
        SpatialMAEConfig(mode="paper")
