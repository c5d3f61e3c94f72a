"""TokenCache and `isdrama-data tokenize`: round trip, invalidation, resume after a kill, errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from isdrama.codec import BinauralCodec, CodecConfig, KMeansConfig, init_codebooks_kmeans
from isdrama.data import cache as cache_mod
from isdrama.data.audio import read_audio, write_audio
from isdrama.data.cache import TokenCache, TokenCacheMiss
from isdrama.data.schema import DataError, DramaLine

SR = 48_000
N_LINES = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def binaural(seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    """(2, S) test audio: a few harmonics with vibrato and noise, louder on one side."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(100, 300) * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    mono = sum(0.1 / k * np.sin(k * phase) for k in range(1, 6)) + 0.01 * rng.standard_normal(t.size)
    gain = rng.uniform(0.3, 1.0)
    return np.stack([mono * gain, mono * (1.3 - gain)]).astype(np.float32)


def make_line(root: Path, name: str, wav: np.ndarray, sr: int = SR) -> DramaLine:
    path = root / "set" / "drama" / "wav" / f"{name}.wav"
    write_audio(path, wav, sr)
    return DramaLine(
        drama_id="drama",
        line_id=name,
        speaker="spk",
        text="t",
        words=("t",),
        word_durations=(wav.shape[-1] / sr,),
        start=0.0,
        end=wav.shape[-1] / sr,
        wav_path=path,
        set_name="set",
    )


@pytest.fixture(scope="module")
def codec() -> BinauralCodec:
    """Random-weight 24 kHz codec at 1.5 kbps (n_q = 2), codebooks k-means initialised."""
    codec = BinauralCodec(CodecConfig(pretrained=False, bandwidth=1.5, seed=0))
    train = torch.stack([codec.prepare_audio(binaural(2.0, seed=s), SR)[0] for s in (100, 101)])
    init_codebooks_kmeans(codec, train, KMeansConfig(n_iters=5))
    return codec


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, list[DramaLine]]:
    root = tmp_path / "ds"
    lines = [make_line(root, f"line{i}", binaural(0.3 + 0.1 * i, seed=i)) for i in range(N_LINES)]
    return root, lines


def direct_tokens(codec: BinauralCodec, wav_path: Path) -> np.ndarray:
    wav, sr = read_audio(wav_path, expect_sr=SR, expect_channels=2)
    return codec.encode(codec.prepare_audio(wav, sr))[0].numpy().astype(np.int16)


def cache_files(cache: TokenCache) -> list[Path]:
    return sorted(p for p in cache.directory.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------ round trip
def test_round_trip_equals_direct_encode(codec, dataset):
    root, lines = dataset
    cache = TokenCache(root, codec)
    assert cache.directory == root / ".isdrama_cache" / "tokens" / codec.config_key()
    assert not any(cache.has(line) for line in lines)
    stats = cache.tokenize(lines, batch_size=1, progress=False)
    assert (stats.lines, stats.encoded, stats.skipped) == (N_LINES, N_LINES, 0)
    assert stats.audio_seconds == pytest.approx(sum(0.3 + 0.1 * i for i in range(N_LINES)), abs=1e-3)
    for line in lines:
        tokens = cache.load(line)
        assert tokens.dtype == np.int16 and tokens.shape[:2] == (2, codec.n_q)
        n24 = int(np.ceil(read_audio(line.wav_path)[0].shape[1] / 2))  # samples after 48 -> 24 kHz
        assert tokens.shape[2] == codec.num_frames(n24) == int(np.ceil(n24 / 320))
        np.testing.assert_array_equal(tokens, direct_tokens(codec, line.wav_path))
        np.testing.assert_array_equal(cache.load(line.wav_path), tokens)
        assert cache.num_frames(line) == tokens.shape[2]
    assert len({cache.load(line).tobytes() for line in lines}) == N_LINES  # tokens differ per line
    manifest = cache.manifest
    assert set(manifest) == {line.key for line in lines}
    assert manifest[lines[0].key]["wav"] == "set/drama/wav/line0.wav"
    assert (cache.directory / "codec.json").is_file() and cache.manifest_path.is_file()

    # Padded batches give the same tokens as one line at a time (the 24 kHz model is causal). The
    # latents of a line alone and inside a batch agree only to float32 rounding (other GEMM / conv
    # orders); quantize's float64 nearest-code search is insensitive to that, so tokens are equal.
    batched = TokenCache(root, codec, cache_dir=root / "batched")
    assert batched.tokenize(lines, batch_size=4, progress=False).encoded == N_LINES
    for line in lines:
        np.testing.assert_array_equal(batched.load(line), cache.load(line))

    # Everything cached: a second run encodes nothing.
    again = TokenCache(root, codec).tokenize(lines, batch_size=2, progress=False)
    assert (again.encoded, again.skipped) == (0, N_LINES)


def test_identical_audio_is_encoded_once(codec, tmp_path):
    root = tmp_path / "ds"
    wav = binaural(0.4, seed=7)
    lines = [make_line(root, "a", wav), make_line(root, "b", wav)]
    stats = TokenCache(root, codec).tokenize(lines, batch_size=2, progress=False)
    assert (stats.encoded, stats.shared) == (1, 1)
    cache = TokenCache(root, codec)
    np.testing.assert_array_equal(cache.load(lines[0]), cache.load(lines[1]))
    assert set(cache.manifest) == {lines[0].key, lines[1].key}


# ------------------------------------------------------------------------------------------ invalidation
def test_codec_config_change_re_encodes(codec, dataset):
    root, lines = dataset
    TokenCache(root, codec).tokenize(lines, progress=False)
    other = BinauralCodec(CodecConfig(pretrained=False, bandwidth=3.0, seed=0))  # n_q = 4
    init_codebooks_kmeans(other, codec.prepare_audio(binaural(1.0, seed=100), SR), KMeansConfig(n_iters=2))
    other_cache = TokenCache(root, other)
    assert other_cache.codec_key != codec.config_key()
    assert not any(other_cache.has(line) for line in lines)
    stats = other_cache.tokenize(lines, progress=False)
    assert stats.encoded == N_LINES and other_cache.load(lines[0]).shape[1] == 4
    assert TokenCache(root, codec).load(lines[0]).shape[1] == 2  # old entries stay


def test_audio_change_re_encodes_that_line_only(codec, dataset):
    root, lines = dataset
    cache = TokenCache(root, codec)
    cache.tokenize(lines, progress=False)
    before = cache.load(lines[2])
    write_audio(lines[2].wav_path, binaural(0.5, seed=999), SR)  # same length, new bytes
    assert not cache.has(lines[2]) and all(cache.has(line) for i, line in enumerate(lines) if i != 2)
    with pytest.raises(TokenCacheMiss, match="line2"):
        cache.load(lines[2])
    stats = TokenCache(root, codec).tokenize(lines, progress=False)
    assert (stats.encoded, stats.skipped) == (1, N_LINES - 1)
    after = cache.load(lines[2])
    np.testing.assert_array_equal(after, direct_tokens(codec, lines[2].wav_path))
    assert not np.array_equal(after, before)


def test_recorded_hash_reused_only_while_file_is_unchanged(codec, dataset, monkeypatch):
    root, lines = dataset
    TokenCache(root, codec).tokenize(lines[:1], progress=False)
    old = lines[0].wav_path.stat().st_mtime_ns - 10 * 10**9
    os.utime(lines[0].wav_path, ns=(old, old))  # an old file: its stat is not racy
    cache = TokenCache(root, codec)
    expected = cache.load(lines[0])  # mtime changed since the manifest: hashed again
    calls = []
    real_hash = cache_mod.hash_file
    monkeypatch.setattr(cache_mod, "hash_file", lambda p: calls.append(p) or real_hash(p))
    np.testing.assert_array_equal(cache.load(lines[0]), expected)
    assert calls == []  # size + mtime unchanged: recorded hash reused
    write_audio(lines[0].wav_path, binaural(0.3, seed=55), SR)
    assert not cache.has(lines[0]) and len(calls) == 1  # rewritten: hashed again, no stale hit


# ------------------------------------------------------------------------------------------ resume
def test_resume_after_a_kill(codec, dataset, monkeypatch):
    root, lines = dataset
    cache = TokenCache(root, codec)
    real_np_save = np.save
    written = []

    def save_then_die(file, array, *args, **kwargs):
        """np.save that dies half-way through the third file (as a kill would)."""
        if len(written) == 2:
            Path(file).write_bytes(b"\x93NUMPY partial")
            raise KeyboardInterrupt("simulated kill")
        real_np_save(file, array, *args, **kwargs)
        written.append(file)

    monkeypatch.setattr(np, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        cache.tokenize(lines, batch_size=1, progress=False)
    monkeypatch.setattr(np, "save", real_np_save)
    files = cache_files(cache)
    entries = [p for p in files if p.suffix == ".npy"]
    assert len(entries) == 2 and all(np.load(p).dtype == np.int16 for p in entries)
    assert {p.name for p in files if p.suffix != ".npy"} == {"codec.json", "manifest.json"}, files
    assert len(TokenCache(root, codec).manifest) == 2  # the manifest was flushed on the way out
    mtimes = {p: p.stat().st_mtime_ns for p in entries}

    encoded = []
    real_encode = codec.encode
    monkeypatch.setattr(codec, "encode", lambda wav: encoded.append(wav.shape[0]) or real_encode(wav))
    stats = TokenCache(root, codec).tokenize(lines, batch_size=1, progress=False)
    assert (stats.encoded, stats.skipped) == (N_LINES - 2, 2) and sum(encoded) == N_LINES - 2
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())  # finished entries untouched
    final = TokenCache(root, codec)
    for line in lines:
        np.testing.assert_array_equal(final.load(line), direct_tokens(codec, line.wav_path))


# ------------------------------------------------------------------------------------------ errors
def test_wrong_sample_rate_or_channels_name_the_file(codec, tmp_path):
    root = tmp_path / "ds"
    good = make_line(root, "good", binaural(0.3, seed=1))
    bad_sr = make_line(root, "bad_sr", binaural(0.3, seed=2, sr=44_100), sr=44_100)
    mono = make_line(root, "mono", binaural(0.3, seed=3)[:1])
    cache = TokenCache(root, codec)
    with pytest.raises(DataError, match=r"bad_sr\.wav.*44100 Hz, expected 48000"):
        cache.tokenize([good, bad_sr], batch_size=1, progress=False)
    assert not cache.has(good)  # checked before any encoding
    with pytest.raises(DataError, match=r"mono\.wav.*1 channel\(s\), expected 2"):
        cache.tokenize([mono], progress=False)
    assert not cache.has(bad_sr) and not cache.has(mono)
    with pytest.raises(DataError, match=r"missing\.wav.*not found"):
        cache.load(root / "missing.wav")
    with pytest.raises(TokenCacheMiss, match=r"line set/drama/mono.*isdrama-data tokenize"):
        cache.load(mono)


def test_uninitialised_codec_refuses_to_cache_zeros(dataset):
    root, lines = dataset
    raw = BinauralCodec(CodecConfig(pretrained=False, bandwidth=1.5))
    with pytest.raises(RuntimeError, match="never initialised"):
        TokenCache(root, raw).tokenize(lines, progress=False)


def test_read_only_cache_pickles_without_the_codec(codec, dataset):
    root, lines = dataset
    cache = TokenCache(root, codec)
    cache.tokenize(lines[:2], progress=False)
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.codec is None and len(pickle.dumps(cache)) < 100_000
    np.testing.assert_array_equal(clone(lines[1]), cache.load(lines[1]))
    reader = TokenCache(root, codec_key=codec.config_key())
    np.testing.assert_array_equal(reader.load(lines[0]), cache.load(lines[0]))
    with pytest.raises(RuntimeError, match="read-only"):
        reader.tokenize(lines, progress=False)


# ------------------------------------------------------------------------------------------ CLI
def test_tokenize_cli_kmeans_once_then_reuse(tiny_dataset, capsys):
    from isdrama.data.cli import main

    args = [
        "tokenize",
        str(tiny_dataset),
        "--pretrained",
        "false",
        "--bandwidth",
        "1.5",
        "--kmeans-init",
        "2",
        "--quiet",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "k-means on up to 2 s" in out and "9 encoded" in out
    ckpts = list((tiny_dataset / ".isdrama_cache" / "codec").glob("*.pt"))
    assert len(ckpts) == 1
    key = next(line for line in out.splitlines() if "codec key" in line).split("codec key ")[1].split(";")[0]

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "reusing the k-means-initialised codec" in out and "0 encoded, 9 already cached" in out
    assert f"codec key {key}" in out

    cache = TokenCache(tiny_dataset, BinauralCodec.load(ckpts[0]))
    assert cache.codec_key == key and len(cache.manifest) == 9
    assert main(["tokenize", str(tiny_dataset), "--pretrained", "false", "--kmeans-init", "0", "--quiet"]) == 1
    assert "forbids" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_resumes_after_sigkill(tmp_path):
    """A real `kill -9` in the middle of `isdrama-data tokenize`; the rerun finishes the job."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import write_tiny_dataset

    root = write_tiny_dataset(tmp_path / "ds", n_dramas=6, lines_per_drama=4)
    cmd = [
        sys.executable,
        "-m",
        "isdrama.data.cli",
        "tokenize",
        str(root),
        "--pretrained",
        "false",
        "--bandwidth",
        "1.5",
        "--kmeans-init",
        "2",
        "--batch-size",
        "1",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tokens_dir = root / ".isdrama_cache" / "tokens"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(tokens_dir.rglob("[0-9a-f]*.npy"))) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "tokenize finished before it could be killed: " + proc.stdout.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(tokens_dir.rglob("[0-9a-f]*.npy"))
    assert 3 <= len(done) < 24
    for path in done:  # every finished entry is whole
        assert np.load(path).dtype == np.int16
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{24 - len(done)} encoded, {len(done)} already cached" in result.stdout
    assert not [p for p in tokens_dir.rglob(".*") if p.is_file()]


def test_stereo_48khz_codec_round_trip(tmp_path):
    """The non-causal 48 kHz model batches only equal lengths; tokens equal a direct encode (the
    latents of a batch of 2 and of 1 differ by float32 rounding, which the float64 nearest-code
    search does not feel)."""
    codec = BinauralCodec(CodecConfig(model="encodec_48khz", bandwidth=3.0, pretrained=False))
    init_codebooks_kmeans(codec, codec.prepare_audio(binaural(1.0, seed=100), SR), KMeansConfig(n_iters=2))
    root = tmp_path / "ds"
    lines = [make_line(root, f"l{i}", binaural(d, seed=i)) for i, d in enumerate((0.2, 0.2, 0.3))]
    cache = TokenCache(root, codec)
    assert cache.tokenize(lines, batch_size=4, progress=False).encoded == 3
    for line in lines:
        tokens = cache.load(line)
        assert tokens.shape == (2, 2, codec.num_frames(read_audio(line.wav_path)[0].shape[1]))
        np.testing.assert_array_equal(tokens, direct_tokens(codec, line.wav_path))
