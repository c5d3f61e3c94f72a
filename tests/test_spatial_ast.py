"""SpatialAST (isdrama.metrics.spatial_ast): released checkpoint format, front end, metrics.

The real finetuned.pth cannot be downloaded here: checkpoints are randomly initialised models
saved in the released format ({'model': state_dict}). Expectations come from the public
Spatial-AST code (names, shapes, formulas) and from librosa/scipy/numpy computations.
"""

from __future__ import annotations

import argparse

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from scipy.signal import resample_poly

from isdrama.metrics.audio_prep import AudioInputError
from isdrama.metrics.spatial_ast import (
    CheckpointMismatchError,
    SpatialAST,
    SpatialASTConfig,
    SpatialASTMetricConfig,
    SpatialASTOutput,
    angular_error_deg,
    decode_positions,
    embed_files,
    load_spatial_ast,
    prepare_waveform,
    save_spatial_ast,
    spatial_ast_scores,
    token_cosine,
)

SMALL = SpatialASTConfig(embed_dim=64, depth=2, num_heads=4)


def randomise_buffers(model: SpatialAST, seed: int = 0) -> SpatialAST:
    """Give BatchNorm statistics and LayerNorms non-default values (a loaded file must restore them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("running_mean", "bias")) and "extractor" not in name:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 20 + 1)
            elif name.endswith("norm.weight") or ".norm1.weight" in name or ".norm2.weight" in name:
                t.copy_(1 + torch.randn(t.shape, generator=g) * 0.3)
    return model


def binaural_noise(seed: int, seconds: float, sr: int = 32000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    src = rng.standard_normal(n + 16) * 0.1
    return np.stack([src[8 : 8 + n], src[3 : 3 + n] * 0.6])  # (2, N): right ear earlier and quieter


# --------------------------------------------------------------------------------------------
# the released format

EXPECTED_SHAPES = {  # from the public Spatial-AST code (vit_base_patch16, 355 classes)
    "patch_embed.proj.weight": (768, 1, 16, 16),
    "patch_embed.proj.bias": (768,),
    "cls_tokens": (1, 3, 768),
    "pos_embed": (1, 513, 768),
    "conv_downsample.0.weight": (1, 4, 3, 3),
    "conv_downsample.1.weight": (1,),
    "conv_downsample.1.running_var": (1,),
    "bn.running_mean": (2,),
    "bn.running_var": (2,),
    "spectrogram_extractor.conv_real.weight": (513, 1, 1024),
    "spectrogram_extractor.conv_imag.weight": (513, 1, 1024),
    "logmel_extractor.melW": (513, 128),
    "blocks.0.norm1.weight": (768,),
    "blocks.11.attn.qkv.weight": (2304, 768),
    "blocks.11.attn.qkv.bias": (2304,),
    "blocks.11.attn.proj.weight": (768, 768),
    "blocks.11.mlp.fc1.weight": (3072, 768),
    "blocks.11.mlp.fc2.weight": (768, 3072),
    "blocks.11.norm2.bias": (768,),
    "dis_norm.weight": (768,),
    "doa_norm.bias": (768,),
    "fc_norm.weight": (768,),
    "head.weight": (355, 768),
    "distance_head.weight": (21, 768),
    "azimuth_head.weight": (360, 768),
    "elevation_head.weight": (180, 768),
}


def test_released_format_full_size_roundtrip(tmp_path):
    model = randomise_buffers(SpatialAST())
    sd = model.state_dict()
    for key, shape in EXPECTED_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    assert "bn.weight" not in sd and "blocks.12.norm1.weight" not in sd and "cls_token" not in sd
    n_params = sum(p.numel() for k, p in sd.items() if k.startswith("blocks."))
    assert 84e6 < n_params < 86e6  # ViT-B: 12 x 7.08 M
    path = tmp_path / "finetuned.pth"
    save_spatial_ast(model, path)
    assert set(torch.load(path, weights_only=True)) == {"model"}
    loaded, report = load_spatial_ast(path)
    path.unlink()  # 350 MB: do not leave it in pytest's kept temp folders
    assert report.missing == [] and report.unexpected == [] and report.heads_loaded
    x = torch.from_numpy(binaural_noise(0, 10.0)).float()[None]
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for field in ("distance_token", "doa_token", "azimuth_logits", "distance_logits", "elevation_logits"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.doa_token.shape == (1, 768)


@pytest.fixture()
def small_ckpt(tmp_path):
    model = randomise_buffers(SpatialAST(SMALL))
    path = tmp_path / "small.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(model="vit_base_patch16"), "epoch": 3}, path)
    return model, path


def test_small_roundtrip_with_training_args(small_ckpt):
    model, path = small_ckpt
    loaded, report = load_spatial_ast(path, cfg=SMALL)
    assert report.missing == [] and report.unexpected == []
    x = torch.from_numpy(binaural_noise(1, 2.0)).float()[None]
    with torch.no_grad():
        assert torch.equal(model(x).doa_token, loaded(x).doa_token)


def _save(sd: dict, path) -> None:
    torch.save({"model": sd}, path)


def test_mismatched_checkpoints_are_refused_naming_keys(small_ckpt, tmp_path):
    model, _ = small_ckpt
    sd = model.state_dict()
    missing = {k: v for k, v in sd.items() if k != "blocks.1.attn.qkv.weight"}
    _save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointMismatchError, match=r"missing encoder key.*blocks\.1\.attn\.qkv\.weight"):
        load_spatial_ast(tmp_path / "missing.pth", cfg=SMALL)
    wrong = dict(sd, **{"doa_norm.weight": torch.ones(65)})
    _save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointMismatchError, match=r"doa_norm\.weight \(file \(65,\), model \(64,\)\)"):
        load_spatial_ast(tmp_path / "wrong.pth", cfg=SMALL)
    # the small checkpoint is refused by the default (ViT-B) configuration, with the shapes listed
    _save(sd, tmp_path / "small2.pth")
    with pytest.raises(CheckpointMismatchError, match=r"cls_tokens"):
        load_spatial_ast(tmp_path / "small2.pth")
    torch.save({"state": sd}, tmp_path / "nomodel.pth")
    with pytest.raises(CheckpointMismatchError, match="'model'"):
        load_spatial_ast(tmp_path / "nomodel.pth", cfg=SMALL)


def test_tolerated_differences_are_reported(small_ckpt, tmp_path):
    model, _ = small_ckpt
    sd = model.state_dict()
    extra = dict({f"module.{k}": v for k, v in sd.items()}, **{"module.blocks2.0.norm1.weight": torch.ones(64)})
    del extra["module.logmel_extractor.melW"], extra["module.azimuth_head.weight"]
    _save(extra, tmp_path / "extra.pth")
    with pytest.warns(UserWarning, match="blocks2"):
        loaded, report = load_spatial_ast(tmp_path / "extra.pth", cfg=SMALL)
    assert report.unexpected == ["blocks2.0.norm1.weight"]
    assert set(report.missing) == {"logmel_extractor.melW", "azimuth_head.weight"}
    assert not report.heads_loaded
    torch.testing.assert_close(loaded.logmel_extractor.melW, model.logmel_extractor.melW)  # recomputed
    x = torch.from_numpy(binaural_noise(2, 1.0)).float()[None]
    with torch.no_grad():
        assert torch.equal(model(x).doa_token, loaded(x).doa_token)


# --------------------------------------------------------------------------------------------
# architecture and front end against the published formulas


def test_timm_block_equals_published_block():
    """timm 1.0 Block == the timm 0.3.2 / Spatial-AST Block formula, parameter by parameter."""
    torch.manual_seed(0)
    model = SpatialAST(SMALL)
    blk = model.blocks[0]
    p = {k: v.double() for k, v in blk.state_dict().items()}
    x = torch.randn(2, 7, 64, dtype=torch.float64)

    def ln(v, w, b):
        return F.layer_norm(v, (64,), w, b, eps=1e-6)

    h = ln(x, p["norm1.weight"], p["norm1.bias"])
    qkv = (h @ p["attn.qkv.weight"].T + p["attn.qkv.bias"]).reshape(2, 7, 3, 4, 16).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q @ k.transpose(-2, -1)) * 16**-0.5).softmax(-1)
    a = (attn @ v).transpose(1, 2).reshape(2, 7, 64) @ p["attn.proj.weight"].T + p["attn.proj.bias"]
    x1 = x + a
    h = ln(x1, p["norm2.weight"], p["norm2.bias"])
    m = F.gelu(h @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"]) @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
    expected = x1 + m
    with torch.no_grad():
        got = blk.double()(x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_features_equal_librosa_formulas():
    model = randomise_buffers(SpatialAST(SMALL))
    wav = binaural_noise(3, 2.0)  # (2, 64000): 201 frames, interpolated to 1024
    with torch.no_grad():
        got = model.features(torch.from_numpy(wav).float()[None])[0].double()
        real, imag = model.spectrogram_extractor(torch.from_numpy(wav).float())
    spec = librosa.stft(
        wav, n_fft=1024, hop_length=320, win_length=1024, window="hann", center=True, pad_mode="reflect"
    )  # (2, 513, T)
    scale = np.abs(spec).max()
    np.testing.assert_allclose(real.numpy().transpose(0, 2, 1), spec.real, atol=1e-5 * scale)
    np.testing.assert_allclose(imag.numpy().transpose(0, 2, 1), spec.imag, atol=1e-5 * scale)
    mel = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=128, fmin=50, fmax=14000).T.astype(np.float64)
    logmel = 10 * np.log10(np.maximum(np.abs(spec).transpose(0, 2, 1) @ mel, 1e-10))  # (2, T, 128)
    rm = model.bn.running_mean.double().numpy()[:, None, None]
    rv = model.bn.running_var.double().numpy()[:, None, None]
    logmel = (logmel - rm) / np.sqrt(rv + 1e-5)
    ipd = (np.angle(spec[1]) - np.angle(spec[0])).T  # (T, 513)
    feats = np.concatenate([logmel, np.stack([np.cos(ipd) @ mel, np.sin(ipd) @ mel])])  # (4, T, 128)
    expected = F.interpolate(torch.from_numpy(feats)[None], (1024, 128), mode="bicubic", align_corners=True)[0]
    assert got.shape == (4, 1024, 128)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-3)


def test_prepare_waveform_as_published():
    cfg = SpatialASTConfig()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3 * 48000)) * 0.01
    out = prepare_waveform(x, 48000, cfg)
    assert out.shape == (2, 320000) and out.dtype == np.float32
    direct = resample_poly(x, 2, 3, axis=-1)
    direct = direct * 10 ** (-14 / 20) / np.sqrt(np.mean(direct**2))
    np.testing.assert_allclose(out[:, : direct.shape[1]], direct, rtol=1e-5, atol=1e-7)
    assert np.all(out[:, direct.shape[1] :] == 0)
    rms_db = 20 * np.log10(np.sqrt(np.mean(out[:, : direct.shape[1]].astype(np.float64) ** 2)))
    assert rms_db == pytest.approx(-14.0, abs=1e-4)
    long = prepare_waveform(rng.standard_normal((2, 12 * 32000)), 32000, cfg)
    assert long.shape == (2, 320000)
    assert np.all(prepare_waveform(np.zeros((2, 1000)), 32000, cfg) == 0)  # silent: left as is


# --------------------------------------------------------------------------------------------
# decoding, comparisons, metrics


def test_decode_positions_and_angular_error():
    B = 2
    out = SpatialASTOutput(
        *(torch.zeros(B, 8) for _ in range(3)),
        torch.zeros(B, 21),
        torch.zeros(B, 360),
        torch.zeros(B, 180),
        torch.zeros(B, 355),
    )
    out.distance_logits[0, 4] = out.distance_logits[1, 20] = 1
    out.azimuth_logits[0, 90] = out.azimuth_logits[1, 270] = 1
    out.elevation_logits[0, 90] = out.elevation_logits[1, 120] = 1
    pos = decode_positions(out)
    assert pos.distance_m.tolist() == [2.0, 10.0]
    assert pos.azimuth_deg.tolist() == [90.0, 270.0]
    assert pos.elevation_deg.tolist() == [0.0, 30.0]
    t = torch.tensor
    assert float(angular_error_deg(t(0.0), t(0.0), t(90.0), t(0.0))) == pytest.approx(90, abs=1e-4)
    assert float(angular_error_deg(t(10.0), t(0.0), t(350.0), t(0.0))) == pytest.approx(20, abs=1e-4)
    assert float(angular_error_deg(t(0.0), t(89.0), t(180.0), t(89.0))) == pytest.approx(2, abs=1e-4)
    assert float(angular_error_deg(t(0.0), t(0.0), t(180.0), t(0.0))) == pytest.approx(180, abs=1e-4)
    assert float(angular_error_deg(t(33.0), t(-20.0), t(33.0), t(-20.0))) == pytest.approx(0, abs=1e-3)


def test_token_cosine_and_published_wrap_quirk():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((1, 768))
    assert token_cosine(a, a, phase_wrap_quirk=True) == pytest.approx(1.0, abs=1e-9)
    assert token_cosine(a, -a, phase_wrap_quirk=False) == pytest.approx(-1.0, abs=1e-9)
    a[0, 0] = 4.0  # > pi: the published heuristic wraps both vectors
    b = a + rng.standard_normal((1, 768)) * 0.5
    wa, wb = np.angle(np.exp(1j * a.ravel())), np.angle(np.exp(1j * b.ravel()))
    quirk = wa @ wb / (np.linalg.norm(wa) + 1e-8) / (np.linalg.norm(wb) + 1e-8)
    plain = a.ravel() @ b.ravel() / (np.linalg.norm(a) + 1e-8) / (np.linalg.norm(b) + 1e-8)
    assert token_cosine(a, b, phase_wrap_quirk=True) == pytest.approx(quirk, abs=1e-12)
    assert token_cosine(a, b, phase_wrap_quirk=False) == pytest.approx(plain, abs=1e-12)
    assert abs(quirk - plain) > 1e-3
    assert SpatialASTMetricConfig(mode="reference").wrap and not SpatialASTMetricConfig().wrap
    assert not SpatialASTMetricConfig(mode="reference", phase_wrap_quirk=False).wrap


@pytest.fixture()
def wav_files(tmp_path):
    paths = []
    for i, sec in enumerate((2.5, 1.2, 2.5)):
        p = tmp_path / f"{'abc'[i]}.wav"
        sf.write(p, binaural_noise(10 + i, sec, 48000).T, 48000, subtype="PCM_16")
        paths.append(p)
    return paths


def test_scores_identical_files_and_segments(wav_files):
    model = randomise_buffers(SpatialAST(SMALL))
    a, b, c = wav_files
    res = spatial_ast_scores(model, [a, b], [a, b], SpatialASTMetricConfig(mode="reference"))
    np.testing.assert_allclose(res.ang_cos, 1.0, atol=1e-6)
    np.testing.assert_allclose(res.dis_cos, 1.0, atol=1e-6)
    assert np.all(res.angle_error_deg < 1e-3) and np.all(res.distance_error_m == 0)
    diff = spatial_ast_scores(model, [a], [c])
    assert np.abs(diff.gt.doa[0] - diff.gen.doa[0]).max() > 1e-4  # different audio, different tokens
    assert diff.ang_cos[0] < 1.0
    seg = embed_files(model, [a, b], segment_seconds=1.0)
    assert [d.shape for d in seg.doa] == [(2, 64), (1, 64)]
    res = spatial_ast_scores(model, [a, b], [c, a], SpatialASTMetricConfig(segment_seconds=1.0))
    assert res.ang_cos.shape == (2,) and np.all(np.abs(res.ang_cos) <= 1 + 1e-9)


def test_scores_refuse_bad_files(wav_files, tmp_path):
    model = SpatialAST(SMALL)
    mono = tmp_path / "mono.wav"
    sf.write(mono, np.zeros(4800), 48000)
    with pytest.raises(AudioInputError, match="mono.wav"):
        spatial_ast_scores(model, [wav_files[0]], [mono])
    with pytest.raises(ValueError, match="1 ground-truth vs 2 generated"):
        spatial_ast_scores(model, [wav_files[0]], wav_files[:2])
    with pytest.raises(ValueError, match=r"\(B, 2, N\)"):
        model(torch.zeros(1, 1, 32000))
