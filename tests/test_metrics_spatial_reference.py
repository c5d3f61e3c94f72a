"""Reference mode gives the published script's numbers per file, also where rounding decides them.

Pairs with exact digital silence between syllables, a silent ear, a PCM noise floor, unequal
lengths and identical files; the published computation (bench/reference_eval_script.py:
torchlibrosa objects built per file as the published extract_feature does, .npy round trip,
calculate_mae_time) against `spatial_mae_files` / `spatial_errors` in reference mode.

Tolerance: 1e-6 relative per file. Both sides run the same float32 ops on the same shapes; what
may still differ is the vector/scalar split of an elementwise kernel across worker threads (1 ulp
of atan2 in a few bins), i.e. ~1e-7 of one of T x 128 summed terms.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from isdrama.metrics.spatial import SpatialMAEConfig, spatial_errors, spatial_mae_files
from isdrama.metrics.spatial_reference import PublishedSpatialCues

ROOT = Path(__file__).resolve().parents[1]
SR = 48000
sys.path.insert(0, str(ROOT / "bench"))
from bench_eval_spatial import bursts, lowpass  # noqa: E402  the benchmark's speech-like signals


@pytest.fixture(scope="module")
def ref():
    spec = importlib.util.spec_from_file_location("reference_eval_script", ROOT / "bench" / "reference_eval_script.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def binaural(src: np.ndarray, delay: int, gain_db: float) -> np.ndarray:
    """(n,) -> (n, 2): right ear delayed by ``delay`` samples and scaled (exact zeros stay zeros)."""
    right = np.zeros_like(src)
    right[delay:] = src[: len(src) - delay] * 10 ** (gain_db / 20)
    return np.stack([src, right], axis=1)


def cases(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    n = int(1.5 * SR)
    a, b = bursts(rng, n), bursts(rng, n)
    out = {
        "band_limited": (binaural(lowpass(a, 4000), 7, 4.0), binaural(lowpass(b, 4000), 2, -3.0)),
        "digital_silence": (binaural(a, 7, 4.0), binaural(b, 2, -3.0)),
        "same_speech_other_position": (binaural(a, 7, 4.0), binaural(a, 1, -5.0)),
        "identical": (binaural(a, 7, 4.0), binaural(a, 7, 4.0)),
    }
    half = binaural(a, 3, 2.0)
    half[n // 2 :] = 0.0  # second half digitally silent
    left_only = binaural(b, 5, 0.0)
    left_only[:, 1] = 0.0  # one silent ear
    out["partial_silence"] = (half, left_only)
    floor = lambda: rng.integers(-2, 3, size=(n, 2)) / 32768  # noqa: E731  +-2 LSB PCM noise floor
    out["noise_floor"] = (binaural(a, 4, 1.0) + floor(), binaural(b, 6, -1.0) + floor())
    short = binaural(b, 3, 0.0)[: int(1.1 * SR)]
    out["unequal_lengths"] = (binaural(a, 3, 0.0), short)
    return out


@pytest.fixture(scope="module")
def silence_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("silence")
    gts, gens = [], []
    for name, (g, h) in cases().items():
        for folder, x, lst in (("gt", g, gts), ("infer", h, gens)):
            path = root / folder / f"{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            subtype = "FLOAT" if name == "band_limited" else "PCM_16"  # float: no quantisation noise
            sf.write(path, np.clip(x, -1, 1 - 2**-15), SR, subtype=subtype)
            lst.append(path)
    return root, gts, gens


@pytest.fixture(scope="module")
def published(ref, silence_pairs, tmp_path_factory):
    root, _, _ = silence_pairs
    return ref.evaluate_dirs(str(root / "gt"), str(root / "infer"), str(tmp_path_factory.mktemp("npy")))


def test_the_cases_have_digital_silence(silence_pairs):
    _, gts, _ = silence_pairs
    for path in gts[:2]:
        x = sf.read(path, dtype="float32")[0]
        assert 0.3 < np.mean(x == 0) < 0.6, path.name


@pytest.mark.parametrize("workers", [1, 2])
def test_reference_files_equal_the_published_computation(silence_pairs, published, workers):
    _, gts, gens = silence_pairs
    ours = spatial_mae_files(gts, gens, SpatialMAEConfig(mode="reference", workers=workers))
    by_name = dict(zip(published["names"], zip(published["ipd"], published["ild"])))
    for name, ipd, ild in zip(ours.names, ours.ipd, ours.ild):
        theirs_ipd, theirs_ild = by_name[name]
        if name == "identical":
            assert ipd == 0.0 and ild == 0.0 and theirs_ipd == 0.0 and theirs_ild == 0.0
            continue
        assert ipd == pytest.approx(theirs_ipd, rel=1e-6, abs=0), name
        assert ild == pytest.approx(theirs_ild, rel=1e-6, abs=0), name
    assert ours.ipd_mae == pytest.approx(published["ipd_mae_x100"], rel=1e-6)
    assert ours.ild_mae == pytest.approx(published["ild_mae_x100"], rel=1e-6)


def test_reference_tensor_api_equals_the_published_computation(silence_pairs, published):
    """spatial_errors (validation callbacks) in reference mode: each item at its true length."""
    _, gts, gens = silence_pairs
    wavs = [
        [torch.from_numpy(sf.read(p, dtype="float32", always_2d=True)[0].T.copy()) for p in ps] for ps in (gts, gens)
    ]

    def batch(xs):
        out = torch.zeros(len(xs), 2, max(x.shape[-1] for x in xs))
        for i, x in enumerate(xs):
            out[i, :, : x.shape[-1]] = x
        return out, torch.tensor([x.shape[-1] for x in xs])

    (G, gl), (H, hl) = batch(wavs[0]), batch(wavs[1])
    err = spatial_errors(G, H, SR, gl, hl, cfg=SpatialMAEConfig(mode="reference"))
    order = [published["names"].index(p.stem) for p in gts]
    np.testing.assert_allclose(err.ipd.numpy(), published["ipd"][order], rtol=1e-6, atol=0)
    np.testing.assert_allclose(err.ild.numpy(), published["ild"][order], rtol=1e-6, atol=0)


def test_an_fft_stft_does_not_give_the_published_numbers(silence_pairs, published):
    """Why reference mode uses torchlibrosa: the same formulas on a float32 FFT move the published
    per-file IPD of band-limited, digitally silent audio by far more than the tolerance above (in
    bins that hold only rounding, the unwrapped phase is the rounding's)."""
    _, gts, gens = silence_pairs
    pub = PublishedSpatialCues.from_config(SpatialMAEConfig().cues)

    class FftStft(torch.nn.Module):
        def forward(self, x):  # (B, N) -> real, imag (B, 1, T, 513), as torchlibrosa's STFT
            spec = torch.stft(
                x, 1024, 320, 1024, torch.hann_window(1024), center=True, pad_mode="reflect", return_complex=True
            ).transpose(1, 2)[:, None]
            return spec.real.contiguous(), spec.imag.contiguous()

    pub.stft = FftStft()
    i = published["names"].index("band_limited")
    assert gts[0].stem == "band_limited"
    moved = pub.file_pair_error(gts[0], gens[0]).ipd
    assert abs(moved - published["ipd"][i]) > 1e-4 * published["ipd"][i]


def test_thread_setting_is_scoped_to_the_file_api(silence_pairs, monkeypatch, tmp_path):
    """The file API computes pairs on single-threaded workers and restores torch's thread count,
    also when a file is bad; the tensor API (validation during training) never changes it."""
    _, gts, gens = silence_pairs
    before = torch.get_num_threads()
    seen = []
    real_set = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real_set(n)))
    x = torch.from_numpy(sf.read(gts[1], dtype="float32", always_2d=True)[0].T.copy())[None]
    for mode in ("reference", "corrected"):
        spatial_errors(x, x, SR, cfg=SpatialMAEConfig(mode=mode))
    assert seen == []
    bad = tmp_path / "mono.wav"
    sf.write(bad, np.zeros(SR), SR)
    for mode in ("reference", "corrected"):
        spatial_mae_files(gts[:2], gens[:2], SpatialMAEConfig(mode=mode, workers=2))
        assert torch.get_num_threads() == before
        with pytest.raises(Exception, match="mono.wav"):
            spatial_mae_files(gts[:2], [gens[0], bad], SpatialMAEConfig(mode=mode, workers=2))
        assert torch.get_num_threads() == before
    assert seen == [1, before] * 4
