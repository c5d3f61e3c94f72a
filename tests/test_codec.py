"""BinauralCodec: shapes, token layout, weights loading, offline fallback, k-means codebooks."""

from __future__ import annotations

import copy
import hashlib
import logging
import urllib.error

import numpy as np
import pytest
import torch

from isdrama.codec import (
    BinauralCodec,
    CodecConfig,
    KMeansConfig,
    PretrainedUnavailableError,
    RandomCodecWeightsWarning,
    init_codebooks_kmeans,
)
from isdrama.codec import weights as codec_weights

SR24 = 24_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def speechlike(seconds: float, sr: int, seed: int) -> torch.Tensor:
    """(2, S) binaural test signal: harmonic voice with a gliding f0, syllable envelope, noise
    bursts, interaural level and time differences that change over time."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t), 0, None) ** 0.5
    noise = rng.standard_normal(n) * (np.sin(2 * np.pi * rng.uniform(0.5, 2) * t) > 0.7)
    mono = 0.08 * voice * envelope + 0.03 * noise
    pan = 0.5 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    delay = int(rng.integers(1, 20))
    left = mono * pan
    right = np.concatenate([np.zeros(delay), mono[:-delay]]) * (1 - pan)
    return torch.from_numpy(np.stack([left, right]).astype(np.float32))


def centred_pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson r over all elements after removing each channel's mean over time: (B, C, T) x2."""
    a = (a - a.mean(dim=-1, keepdim=True)).flatten().double()
    b = (b - b.mean(dim=-1, keepdim=True)).flatten().double()
    denom = a.norm() * b.norm()
    return float((a @ b) / denom) if denom > 0 else 0.0


@pytest.fixture(scope="module")
def raw_codec() -> BinauralCodec:
    return BinauralCodec(CodecConfig(pretrained=False, bandwidth=6.0, seed=0))


@pytest.fixture(scope="module")
def kmeans_codec() -> BinauralCodec:
    """24 kHz codec at 3 kbps (n_q = 4), random weights, codebooks k-means initialised on
    2 x 4 s of training audio."""
    codec = BinauralCodec(CodecConfig(pretrained=False, bandwidth=3.0, seed=0))
    train = torch.stack([speechlike(4.0, SR24, seed=s) for s in (1, 2)])
    codec.kmeans_report = init_codebooks_kmeans(codec, train, KMeansConfig(n_iters=8, seed=0))
    return codec


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "model,bandwidth,n_q",
    [
        ("encodec_24khz", 1.5, 2),
        ("encodec_24khz", 3, 4),
        ("encodec_24khz", 6, 8),
        ("encodec_24khz", 12, 16),
        ("encodec_24khz", 24, 32),
        ("encodec_48khz", 3, 2),
        ("encodec_48khz", 6, 4),
        ("encodec_48khz", 24, 16),
    ],
)
def test_bandwidth_sets_n_q(model, bandwidth, n_q):
    assert CodecConfig(model=model, bandwidth=bandwidth, pretrained=False).n_q == n_q


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="bandwidth 1.5 kbps is not supported by encodec_48khz"):
        CodecConfig(model="encodec_48khz", bandwidth=1.5)
    with pytest.raises(ValueError, match="codec.model"):
        CodecConfig(model="dac")
    with pytest.raises(ValueError, match="codec.pretrained"):
        CodecConfig(pretrained="maybe")
    with pytest.raises(ValueError, match="unknown key"):
        CodecConfig.from_dict({"model": "encodec_24khz", "bandwith": 6})
    assert CodecConfig(pretrained=True).pretrained == "true"
    assert CodecConfig.from_dict({"kmeans": {"n_iters": 3}}).kmeans.n_iters == 3


# ------------------------------------------------------------------------------------------ shapes
def test_shapes_and_frame_rate_24khz(raw_codec):
    codec = raw_codec
    assert (codec.sample_rate, codec.frame_rate, codec.hop_length) == (24_000, 75.0, 320)
    assert (codec.n_q, codec.latent_dim, codec.codebook_size) == (8, 256, 1024)
    wav = speechlike(0.5, SR24, seed=0)[:, :12_100].unsqueeze(0).repeat(2, 1, 1)  # (2, 2, 12100)
    tokens = codec.encode(wav)
    assert tokens.shape == (2, 2, 8, 38) and tokens.dtype == torch.long  # ceil(12100 / 320) = 38
    assert codec.num_frames(12_100) == 38 and codec.num_frames(24_000) == 75
    assert codec.encoder_latent(wav).shape == (2, 256, 38)
    assert codec.tokens_to_latent(tokens).shape == (2, 256, 38)
    assert codec.tokens_to_latent(tokens[:, :, :3]).shape == (2, 256, 38)
    assert codec.decode(tokens).shape == (2, 2, 38 * 320)
    with pytest.raises(ValueError, match=r"\(B, 2, S\)"):
        codec.encode(wav[:, :1])
    with pytest.raises(ValueError, match="latent"):
        codec.quantize(torch.zeros(1, 128, 5))


def test_shapes_and_packing_48khz():
    codec = BinauralCodec(CodecConfig(model="encodec_48khz", bandwidth=6.0, pretrained=False))
    assert (codec.sample_rate, codec.frame_rate, codec.hop_length, codec.n_q, codec.latent_dim) == (
        48_000,
        75.0,
        640,
        4,
        256,
    )
    wav = torch.stack([speechlike(0.5, 48_000, seed=3)])  # 24000 samples -> 37.5 -> 38 frames
    latent = codec.encoder_latent(wav)
    tokens = codec.encode(wav)
    assert latent.shape == (1, 256, 38) and tokens.shape == (1, 2, 4, 38)
    assert codec.decode(tokens).shape == (1, 2, 38 * 640)
    # Packing: latent[:, :128, t] is EnCodec frame 2t, latent[:, 128:, t] is frame 2t + 1.
    padded = torch.nn.functional.pad(wav, (0, 38 * 640 - wav.shape[-1]))
    rms = padded.mean(dim=1, keepdim=True).pow(2).mean(dim=-1, keepdim=True).sqrt()
    with torch.no_grad():
        raw = codec.model.encoder(padded / (rms + 1e-8))  # (1, 128, 76) at 150 Hz
    torch.testing.assert_close(latent[:, :128], raw[:, :, 0::2])
    torch.testing.assert_close(latent[:, 128:], raw[:, :, 1::2])


def test_24khz_ears_are_encoded_separately(raw_codec):
    """Latent channels [0:128] depend on the left ear only, [128:256] on the right ear only."""
    wav = speechlike(0.5, SR24, seed=4).unsqueeze(0)
    base = raw_codec.encoder_latent(wav)
    changed = wav.clone()
    changed[:, 1] = speechlike(0.5, SR24, seed=5)[1]
    latent = raw_codec.encoder_latent(changed)
    left_change = (latent[:, :128] - base[:, :128]).abs().max()
    right_change = (latent[:, 128:] - base[:, 128:]).abs().max()
    assert left_change <= 1e-7 and right_change > 1e-5, (left_change, right_change)
    swapped = raw_codec.encoder_latent(wav.flip(1))
    torch.testing.assert_close(swapped, torch.cat([base[:, 128:], base[:, :128]], dim=1))


# ------------------------------------------------------------------------------------------ k-means
def test_uninitialised_codebooks_give_all_zero_tokens(raw_codec):
    """The caution of the issue, measured: random EnCodec has zero codebooks, every token is 0."""
    assert raw_codec.uninitialised_layers == list(range(raw_codec.n_q))
    tokens = raw_codec.encode(speechlike(0.5, SR24, seed=9).unsqueeze(0))
    assert tokens.abs().sum() == 0
    assert raw_codec.tokens_to_latent(tokens).abs().max() == 0


def test_kmeans_tokens_carry_information(kmeans_codec, raw_codec):
    codec = kmeans_codec
    assert codec.uninitialised_layers == []
    held_out = torch.stack([speechlike(1.5, SR24, seed=s) for s in (11, 12)])
    latent = codec.encoder_latent(held_out)
    tokens = codec.quantize(latent)  # = codec.encode(held_out)
    assert len(torch.unique(tokens[:, :, 0])) > 50, "layer-0 tokens should use many codes"
    r = [centred_pearson(codec.tokens_to_latent(tokens[:, :, :q]), latent) for q in range(1, codec.n_q + 1)]
    assert r[-1] > 0.5, r
    assert r[-1] > r[0], r
    assert all(b >= a - 1e-4 for a, b in zip(r, r[1:])), f"r should grow with n_q: {r}"
    # Squared error on held-out audio falls with every codebook added (by > 5 % from 1 to n_q).
    errors = [float((codec.tokens_to_latent(tokens[:, :, :q]) - latent).pow(2).mean()) for q in range(1, codec.n_q + 1)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.95 * errors[0], errors
    # The same measure without k-means is zero: the tokens carry nothing.
    raw_latent = raw_codec.encoder_latent(held_out)
    raw_tokens = raw_codec.quantize(raw_latent)
    assert raw_tokens.abs().sum() == 0
    assert centred_pearson(raw_codec.tokens_to_latent(raw_tokens), raw_latent) == 0.0


def test_quantize_finds_the_nearest_codes_under_a_common_offset():
    """Latents and codes sharing a large common part (as a random encoder gives): EnCodec's float32
    |x|^2 - 2 x.c + |c|^2 cancels most digits there, so its choice follows the rounding. quantize
    gives the exact nearest codes (float64 brute force), the same in a batch as alone, and a
    change of the latent at float32 rounding level (another kernel, batch or CPU) moves no token."""
    codec = BinauralCodec(CodecConfig(pretrained=False, bandwidth=1.5, seed=0))  # n_q = 2
    g = torch.Generator().manual_seed(0)
    offset = torch.randn(128, generator=g) * 10  # |offset|^2 ~ 1e4, spread^2 ~ 0.3
    books = [offset + 0.05 * torch.randn(1024, 128, generator=g), 0.05 * torch.randn(1024, 128, generator=g)]
    for layer, book in zip(codec.model.quantizer.vq.layers, books):
        layer._codebook.embed.copy_(book)
    latent = offset.repeat(2)[None, :, None] + 0.05 * torch.randn(3, 256, 40, generator=g)  # (B, 2D, T)
    tokens = codec.quantize(latent)
    residual = latent.view(3, 2, 128, 40).permute(0, 1, 3, 2).double()  # (B, ear, T, D)
    for q, book in enumerate(books):
        exact = torch.cdist(residual, book.double()[None, None]).argmin(-1)  # (B, ear, T)
        assert torch.equal(tokens[:, :, q], exact), q
        residual = residual - book.double()[exact]
    assert all(torch.equal(codec.quantize(latent[i : i + 1])[0], tokens[i]) for i in range(3))
    nudged = latent * (1 + 1e-7 * torch.randn(latent.shape, generator=g))
    assert torch.equal(codec.quantize(nudged), tokens)


def test_canonical_codes_map_identical_codes_to_the_lowest_index_and_follow_codebook_changes():
    """Identical codes count as one, the lowest index; the map is kept per codebook until the
    codebook changes in place (codec training's EMA updates, loading weights)."""
    from isdrama.codec.binaural import canonical_codes

    book = torch.randn(6, 4)
    book[4] = book[1]
    book[5] = book[1]
    assert canonical_codes(book).tolist() == [0, 1, 2, 3, 1, 1]
    assert canonical_codes(book) is canonical_codes(book)  # kept, not searched again
    book[3] = book[0]  # in place: the version counter moves
    assert canonical_codes(book).tolist() == [0, 1, 2, 0, 1, 1]
    copied = copy.deepcopy(book)  # carries the cache along, but on another storage
    copied[2] = copied[0]
    assert canonical_codes(copied).tolist() == [0, 1, 0, 0, 1, 1]


def test_kmeans_sets_codebook_buffers(kmeans_codec):
    report = kmeans_codec.kmeans_report
    assert report.n_frames == 2 * 2 * 4 * 75  # 2 clips x 2 ears x 4 s x 75 frames/s
    assert len(report.residual_energy) == kmeans_codec.n_q
    assert report.residual_energy == sorted(report.residual_energy, reverse=True)
    for layer in kmeans_codec.model.quantizer.vq.layers[: kmeans_codec.n_q]:
        book = layer._codebook
        assert bool(book.inited.item())
        assert float(book.cluster_size.sum()) == report.n_frames
        used = book.cluster_size > 0
        torch.testing.assert_close(book.embed_avg[used] / book.cluster_size[used, None], book.embed[used])
    for layer in kmeans_codec.model.quantizer.vq.layers[kmeans_codec.n_q :]:
        assert not bool(layer._codebook.inited.item())


# ------------------------------------------------------------------------------------------ weights
def test_config_key_stable_and_sensitive(kmeans_codec):
    a = BinauralCodec(CodecConfig(pretrained=False, bandwidth=3.0, seed=0))
    b = BinauralCodec(CodecConfig(pretrained=False, bandwidth=3.0, seed=0))
    assert a.config_key() == b.config_key() and len(a.config_key()) == 12
    assert BinauralCodec(CodecConfig(pretrained=False, bandwidth=6.0, seed=0)).config_key() != a.config_key()
    assert BinauralCodec(CodecConfig(pretrained=False, bandwidth=3.0, seed=1)).config_key() != a.config_key()
    assert kmeans_codec.config_key() != a.config_key()  # same seed, k-means changed the codebooks


def test_local_checkpoint_gives_identical_outputs(kmeans_codec, tmp_path):
    wav = speechlike(0.5, SR24, seed=21).unsqueeze(0)
    path = tmp_path / "state.pt"
    torch.save(kmeans_codec.model.state_dict(), path)  # a raw EnCodec state dict
    loaded = BinauralCodec(CodecConfig(pretrained=False, bandwidth=3.0, seed=123, checkpoint=str(path)))
    assert loaded.weights_source == f"checkpoint:{path}"
    assert loaded.config_key() == kmeans_codec.config_key()
    tokens = kmeans_codec.encode(wav)
    assert torch.equal(loaded.encode(wav), tokens)
    assert torch.equal(loaded.encoder_latent(wav), kmeans_codec.encoder_latent(wav))
    assert torch.equal(loaded.decode(tokens), kmeans_codec.decode(tokens))
    other = BinauralCodec(CodecConfig(pretrained=False, bandwidth=3.0, seed=123))  # same seed, no checkpoint
    assert not torch.equal(other.decode(tokens), kmeans_codec.decode(tokens))

    saved = kmeans_codec.save(tmp_path / "codec.pt", extra={"note": "test"})  # isdrama format
    reloaded = BinauralCodec.load(saved)
    assert reloaded.config_key() == kmeans_codec.config_key()
    assert torch.equal(reloaded.encode(wav), tokens)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "temporary file left behind"


def test_official_checkpoint_file_is_checksum_checked(raw_codec, tmp_path):
    blob = tmp_path / "blob.th"
    torch.save(raw_codec.model.state_dict(), blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()[:8]
    repo = tmp_path / "repo"
    repo.mkdir()
    official = repo / f"encodec_24khz-{digest}.th"
    blob.rename(official)
    with pytest.raises(FileNotFoundError, match="holds no encodec_24khz-d7cc33bc.th"):
        BinauralCodec(CodecConfig(pretrained=False, checkpoint=str(repo)))
    loaded = BinauralCodec(CodecConfig(pretrained=False, seed=5, checkpoint=str(official)))
    assert loaded.config_key() == raw_codec.config_key()
    wrong = repo / "encodec_24khz-00000000.th"
    official.rename(wrong)
    with pytest.raises(ValueError, match="checksum|rejected"):
        BinauralCodec(CodecConfig(pretrained=False, checkpoint=str(wrong)))
    with pytest.raises(FileNotFoundError, match="not found"):
        BinauralCodec(CodecConfig(pretrained=False, checkpoint=str(tmp_path / "missing.pt")))


def _fail_download(calls):
    def fake(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network in this test")

    return fake


def test_pretrained_auto_falls_back_loudly_when_offline(monkeypatch, tmp_path, caplog):
    calls: list[str] = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _fail_download(calls))
    with (
        caplog.at_level(logging.WARNING, logger="isdrama.codec.weights"),
        pytest.warns(RandomCodecWeightsWarning, match="RANDOM codec weights"),
    ):
        codec = BinauralCodec(CodecConfig(pretrained="auto", bandwidth=1.5))
    assert len(calls) == 1 and calls[0].endswith("encodec_24khz-d7cc33bc.th")
    assert codec.has_random_weights and "NOT available" in caplog.text
    with pytest.raises(PretrainedUnavailableError, match="codec.checkpoint"):
        BinauralCodec(CodecConfig(pretrained=True, bandwidth=1.5))
    assert len(calls) == 2
    BinauralCodec(CodecConfig(pretrained=False, bandwidth=1.5))
    assert len(calls) == 2, "pretrained=false must never try the download"


def test_offline_switch_skips_the_network(monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _fail_download(calls))
    with pytest.warns(RandomCodecWeightsWarning, match="offline"):
        BinauralCodec(CodecConfig(pretrained="auto", bandwidth=1.5))
    assert calls == []


def test_pretrained_download_path_loads_the_weights(monkeypatch, kmeans_codec):
    """The real loading path (EnCodec's _get_pretrained -> torch hub) with the hub call faked."""
    state = {k: v.clone() for k, v in kmeans_codec.model.state_dict().items()}
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kw: state)
    codec = BinauralCodec(CodecConfig(pretrained=True, bandwidth=3.0, seed=77))
    assert codec.weights_source == "pretrained:encodec_24khz-d7cc33bc.th" and not codec.has_random_weights
    assert codec.config_key() == kmeans_codec.config_key()
    monkeypatch.setattr(codec_weights, "download_pretrained_state", lambda spec: {"bad": torch.zeros(1)})
    with pytest.raises(ValueError, match="do not fit"):
        BinauralCodec(CodecConfig(pretrained=True))
