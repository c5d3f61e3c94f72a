"""SIM: resemblyzer orders espeak voices; WavLM loading on a tiny random model; bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from isdrama.metrics.speech import (
    InvalidAudio,
    MetricUnavailable,
    SpeakerConfig,
    build_speaker_encoder,
    cosine,
    speaker_similarity,
)
from isdrama.metrics.speech.espeak import espeak_available, synthesize

VOICES = ["en+m3", "en+f2", "en+m1"]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Yesterday we walked to the market and bought fresh bread and apples.",
]


@pytest.fixture(scope="module")
def resemblyzer():
    return build_speaker_encoder(SpeakerConfig(backend="resemblyzer"))


@pytest.fixture(scope="module")
def voices():
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    return {(v, i): synthesize(s, v)[0] for v in VOICES for i, s in enumerate(SENTENCES)}


def test_same_voice_scores_above_different_voices(resemblyzer, voices):
    keys = list(voices)
    emb = dict(zip(keys, resemblyzer.embed([voices[k] for k in keys], 22050)))
    assert all(e.shape == (256,) for e in emb.values())
    # pairs always use different sentences, so only the voice can make them similar
    same = [cosine(emb[(v, 0)], emb[(v, 1)]) for v in VOICES]
    cross = [cosine(emb[(a, 0)], emb[(b, 1)]) for a, b in itertools.permutations(VOICES, 2)]
    assert min(same) > max(cross), (same, cross)


def test_speaker_similarity_to_prompt_and_gt(resemblyzer, voices):
    gen = [voices[("en+m3", 0)], voices[("en+f2", 0)]]
    prompt = [voices[("en+m3", 1)], voices[("en+m3", 1)]]  # the m3 prompt for both
    sim = speaker_similarity(resemblyzer, gen, 22050, prompt)
    assert sim.shape == (2,) and sim[0] > sim[1]
    # identical audio (at another sample rate) -> cosine ~ 1
    from scipy.signal import resample_poly

    gt48 = resample_poly(gen[0], 320, 147)  # 22050 -> 48000 Hz
    assert speaker_similarity(resemblyzer, gen[:1], 22050, [gt48], ref_sr=48000)[0] > 0.99
    binaural = np.stack([gen[0], gen[0]], axis=1)  # (T, C)
    assert speaker_similarity(resemblyzer, [binaural], 22050, gen[:1])[0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="references"):
        speaker_similarity(resemblyzer, gen, 22050, prompt[:1])


def test_bad_input_errors(resemblyzer):
    with pytest.raises(InvalidAudio, match="empty"):
        resemblyzer.embed([np.zeros(0, np.float32)], 16000)
    nan = np.zeros(16000, np.float32)
    nan[3] = np.nan
    with pytest.raises(InvalidAudio, match="non-finite"):
        resemblyzer.embed([nan], 16000)
    with pytest.raises(InvalidAudio, match="silent"):
        resemblyzer.embed([np.zeros(16000, np.float32)], 16000)
    with pytest.raises(InvalidAudio, match="of speech"):
        resemblyzer.embed([1e-4 * np.random.default_rng(0).standard_normal(1600).astype(np.float32)], 16000)
    with pytest.raises(TypeError):
        resemblyzer.embed(np.zeros(16000), 16000)
    with pytest.raises(ValueError, match="backend must be one of"):
        build_speaker_encoder(SpeakerConfig(backend="ecapa"))


def _tiny_wavlm_config():
    from transformers import WavLMConfig

    return WavLMConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        tdnn_dim=(16, 16, 32),
        tdnn_kernel=(3, 3, 1),
        tdnn_dilation=(1, 2, 1),
        xvector_output_dim=24,
        num_buckets=32,
        max_bucket_distance=64,
    )


def test_wavlm_xvector_loads_from_a_local_folder(tmp_path):
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMForXVector

    torch.manual_seed(0)
    model = WavLMForXVector(_tiny_wavlm_config()).eval()
    model.save_pretrained(tmp_path)
    fe = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True)
    fe.save_pretrained(tmp_path)
    enc = build_speaker_encoder(SpeakerConfig(backend="wavlm", model=str(tmp_path)))
    rng = np.random.default_rng(0)
    wavs = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000, 24000)]
    emb = enc.embed(wavs, 16000)
    assert emb.shape == (2, 24)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0)
    for wav, e in zip(wavs, emb):  # independent: the model on the normalised waveform
        x = torch.from_numpy((wav - wav.mean()) / np.sqrt(wav.var() + 1e-7))[None]
        with torch.no_grad():
            ref = model(input_values=x).embeddings[0].numpy()
        assert cosine(e, ref) == pytest.approx(1.0, abs=1e-5)


def test_wavlm_without_trained_head_or_weights_is_unavailable(tmp_path, monkeypatch):
    from transformers import WavLMModel

    WavLMModel(_tiny_wavlm_config()).save_pretrained(tmp_path / "base")
    with pytest.raises(MetricUnavailable, match="no trained x-vector weights") as err:
        build_speaker_encoder(SpeakerConfig(backend="wavlm", model=str(tmp_path / "base")))
    assert err.value.metric == "sim" and err.value.backend == "wavlm"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MetricUnavailable, match="cannot load WavLMForXVector"):
        build_speaker_encoder(SpeakerConfig(backend="wavlm", model=str(tmp_path / "nowhere")))
