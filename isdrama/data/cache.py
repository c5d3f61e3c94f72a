"""Token cache: the codec tokens of every line, encoded once and kept next to the dataset.

Layout (docs/data-format.md)::

    ROOT/.isdrama_cache/tokens/<codec_key>/
        codec.json                 the codec's config, weights source and token layout (for humans)
        manifest.json              line key -> {wav, sha1, frames, size, mtime_ns, hashed_at_ns}
        <sha1[:2]>/<sha1>.npy      int16 (2, n_q, T) tokens of the wav whose bytes hash to sha1

An entry is addressed by the sha1 of the wav file's bytes and lives under the codec's
``config_key()`` (model, bandwidth, weights), so changing either one re-encodes. Each entry is
written atomically, so a killed ``tokenize`` resumes where it stopped (existing entries are
skipped). The manifest is an index (line -> hash -> frames), rewritten atomically now and then
and at the end; entries never depend on it. Several processes must not tokenize into the same
folder at once (their writes are atomic, but the manifest keeps the last writer's view).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from isdrama.data.audio import audio_info, read_audio
from isdrama.data.schema import DATA_SAMPLE_RATE, DataError, DramaLine
from isdrama.utils.io import atomic_path, atomic_write_json

#: Folder under the dataset root that holds every derived cache.
CACHE_DIRNAME = ".isdrama_cache"
TOKENS_SUBDIR = "tokens"
MANIFEST_NAME = "manifest.json"
CODEC_INFO_NAME = "codec.json"
MANIFEST_FORMAT = 1
#: A file whose mtime lies within this margin before the moment it was hashed might have been
#: rewritten within one timestamp tick: its recorded stat is not trusted and it is hashed again
#: (git's "racy clean" rule). Filesystem timestamp granularity, not a tuning knob.
RACY_MARGIN_NS = 2_000_000_000
#: Bytes read at a time when hashing a file.
_HASH_BLOCK = 1 << 20

LineOrPath = Union[DramaLine, Path, str]


class TokenCacheMiss(DataError):
    """No cached tokens for a line (run ``isdrama-data tokenize ROOT``)."""


@dataclass
class TokenizeStats:
    """Outcome of :meth:`TokenCache.tokenize`.

    lines: lines seen; encoded: wavs encoded now; skipped: lines already cached; shared: lines
    whose audio bytes equal another line's in this run (encoded once); stale_removed: temporary
    files of a killed earlier run deleted; audio_seconds: seconds of
    binaural audio encoded now; wall_seconds: the whole call, hashing and writing included.
    """

    lines: int = 0
    encoded: int = 0
    skipped: int = 0
    shared: int = 0
    stale_removed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def speed(self) -> float:
        """Seconds of binaural audio encoded per wall-clock second."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def format(self) -> str:
        stale = f", {self.stale_removed} stale temporary file(s) removed" if self.stale_removed else ""
        return (
            f"{self.lines} line(s): {self.encoded} encoded, {self.skipped} already cached, "
            f"{self.shared} shared identical audio{stale}; {self.audio_seconds:.1f} s of audio in "
            f"{self.wall_seconds:.1f} s ({self.speed:.2f} s audio / s)"
        )


@dataclass
class _Stat:
    size: int
    mtime_ns: int
    hashed_at_ns: int
    sha1: str


def hash_file(path: Path | str) -> str:
    """sha1 hex digest of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def _save_tokens(path: Path, tokens: np.ndarray) -> None:
    """Write one entry atomically (a temporary name in the same folder, then a rename)."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, tokens)


class TokenCache:
    """Cached codec tokens of a dataset's lines.

    Args:
        root: dataset root (the default cache folder lives under it).
        codec: the :class:`isdrama.codec.BinauralCodec` (needed to ``tokenize``; reading needs only
            its key, so the codec is dropped when the cache is pickled into DataLoader workers).
        codec_key: read-only use without a codec: the ``codec.config_key()`` to read.
        cache_dir: folder holding ``<codec_key>/`` (default ROOT/.isdrama_cache/tokens).
        manifest_interval_s: during ``tokenize`` the manifest is rewritten at most this often
            (and always at the end, also after an error).
    """

    def __init__(
        self,
        root: Path | str,
        codec=None,
        *,
        codec_key: Optional[str] = None,
        cache_dir: Optional[Path | str] = None,
        manifest_interval_s: float = 30.0,
    ):
        if (codec is None) == (codec_key is None):
            raise ValueError("TokenCache needs exactly one of codec or codec_key")
        self.root = Path(root)
        self.codec = codec
        self.codec_key = codec.config_key() if codec is not None else str(codec_key)
        base = Path(cache_dir) if cache_dir is not None else self.root / CACHE_DIRNAME / TOKENS_SUBDIR
        self.directory = base / self.codec_key
        self.manifest_interval_s = float(manifest_interval_s)
        self._entries: dict[str, dict] = {}
        self._stats: dict[str, _Stat] = {}
        self._read_manifest()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["codec"] = None
        return state

    # ----------------------------------------------------------------------------- addressing
    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_NAME

    @property
    def manifest(self) -> dict[str, dict]:
        """line key -> {wav, sha1, frames, size, mtime_ns, hashed_at_ns} (a copy)."""
        return {k: dict(v) for k, v in self._entries.items()}

    def entry_path(self, sha1: str) -> Path:
        """Cache file of the audio whose bytes hash to ``sha1``."""
        return self.directory / sha1[:2] / f"{sha1}.npy"

    def audio_hash(self, wav_path: Path | str, rehash: bool = False) -> str:
        """sha1 of the file's bytes; reuses a recorded hash while size and mtime are unchanged
        (and were not racy when hashed), unless ``rehash``."""
        wav_path = Path(wav_path)
        try:
            st = wav_path.stat()
        except FileNotFoundError:
            raise DataError(wav_path, "audio file not found") from None
        key = str(wav_path.resolve())
        rec = self._stats.get(key)
        if (
            not rehash
            and rec is not None
            and rec.size == st.st_size
            and rec.mtime_ns == st.st_mtime_ns
            and st.st_mtime_ns + RACY_MARGIN_NS < rec.hashed_at_ns
        ):
            return rec.sha1
        hashed_at = time.time_ns()
        sha1 = hash_file(wav_path)
        self._stats[key] = _Stat(st.st_size, st.st_mtime_ns, hashed_at, sha1)
        return sha1

    def path_for(self, item: LineOrPath, rehash: bool = False) -> Path:
        """Cache file for a line (or a wav path); it may not exist yet."""
        return self.entry_path(self.audio_hash(_wav_path(item), rehash))

    def has(self, item: LineOrPath, rehash: bool = False) -> bool:
        return self.path_for(item, rehash).is_file()

    # ----------------------------------------------------------------------------- reading
    def load(self, item: LineOrPath, rehash: bool = False) -> np.ndarray:
        """Tokens of a line: int16 (2, n_q, T). Raises :class:`TokenCacheMiss` naming the line."""
        wav_path = _wav_path(item)
        sha1 = self.audio_hash(wav_path, rehash)
        path = self.entry_path(sha1)
        if not path.is_file():
            what = f"line {item.key}" if isinstance(item, DramaLine) else "this audio"
            raise TokenCacheMiss(
                wav_path,
                f"no cached tokens for {what} (audio sha1 {sha1[:12]}, codec key "
                f"{self.codec_key}) in {self.directory}; run "
                f"`isdrama-data tokenize {self.root}` with the same codec settings",
                key=item.key if isinstance(item, DramaLine) else None,
            )
        try:
            tokens = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataError(path, f"cannot read cached tokens: {exc}") from exc
        if tokens.dtype != np.int16 or tokens.ndim != 3 or tokens.shape[0] != 2:
            raise DataError(path, f"cached tokens must be int16 (2, n_q, T); got {tokens.dtype} {tokens.shape}")
        return tokens

    __call__ = load

    def num_frames(self, item: LineOrPath) -> int:
        """T of a line's cached tokens, read from the file header only."""
        return int(np.load(self.path_for(item), mmap_mode="r").shape[-1])

    # ----------------------------------------------------------------------------- writing
    def tokenize(
        self, lines: Sequence[DramaLine], batch_size: int = 8, progress: bool = True, rehash: bool = False
    ) -> TokenizeStats:
        """Encode every line not cached yet; return what was done.

        Reads binaural 48 kHz wavs (DataError naming the file otherwise), resamples to the codec
        rate, encodes ``batch_size`` lines per call and writes each entry atomically.
        """
        if self.codec is None:
            raise RuntimeError("this TokenCache was built without a codec (read-only); pass codec=")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        bad = self.codec.uninitialised_layers
        if bad:
            raise RuntimeError(
                f"the codec's RVQ codebooks {bad} were never initialised (all zeros): every token "
                "would be 0. Load pretrained weights or run isdrama.codec.init_codebooks_kmeans "
                "first (`isdrama-data tokenize` does this on random weights)"
            )
        t0 = time.perf_counter()
        stats = TokenizeStats(lines=len(lines))
        self.directory.mkdir(parents=True, exist_ok=True)
        stats.stale_removed = self._remove_stale_temp_files()
        atomic_write_json(self.directory / CODEC_INFO_NAME, self.codec.describe())
        bar = tqdm(total=len(lines), desc="tokenize", unit="line", disable=not progress)
        last_flush = time.monotonic()
        try:
            bar.set_postfix_str("hashing")
            pending: dict[str, list[DramaLine]] = {}
            for line in lines:
                sha1 = self.audio_hash(line.wav_path, rehash)
                path = self.entry_path(sha1)
                if sha1 in pending:
                    pending[sha1].append(line)
                    stats.shared += 1
                elif path.is_file():
                    self._record(line, sha1, int(np.load(path, mmap_mode="r").shape[-1]))
                    stats.skipped += 1
                    bar.update(1)
                else:
                    pending[sha1] = [line]
            bar.set_postfix_str("")
            for batch in self._batches(pending, batch_size):
                self._encode_batch(batch, stats)
                bar.update(sum(len(group) for _, group in batch))
                if time.monotonic() - last_flush >= self.manifest_interval_s:
                    self.write_manifest()
                    last_flush = time.monotonic()
        finally:
            bar.close()
            self.write_manifest()
            stats.wall_seconds = time.perf_counter() - t0
        return stats

    def _remove_stale_temp_files(self) -> int:
        """Delete temporary files a killed run left behind (atomic writes use hidden names)."""
        stale = [p for p in self.directory.rglob(".*") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    def _batches(
        self, pending: dict[str, list[DramaLine]], batch_size: int
    ) -> Iterator[list[tuple[str, list[DramaLine]]]]:
        """Jobs grouped for encoding, shortest first. A causal codec pads within a batch (zero
        padding at the end leaves earlier frames unchanged); a non-causal one batches only equal
        lengths."""
        lengths = {}
        for sha1, group in pending.items():  # header checks first: fail before hours of encoding
            info = audio_info(group[0].wav_path)
            if info.samplerate != DATA_SAMPLE_RATE:
                raise DataError(group[0].wav_path, f"sample rate {info.samplerate} Hz, expected {DATA_SAMPLE_RATE} Hz")
            if info.channels != 2:
                raise DataError(
                    group[0].wav_path, f"{info.channels} channel(s), expected 2 (binaural: channel 0 = left, 1 = right)"
                )
            lengths[sha1] = info.frames
        order = sorted(pending, key=lambda s: (lengths[s], s))
        if self.codec.causal:
            groups = [order]
        else:
            groups, current = [], []
            for sha1 in order:
                if current and lengths[current[-1]] != lengths[sha1]:
                    groups.append(current)
                    current = []
                current.append(sha1)
            groups += [current] if current else []
        for group in groups:
            for i in range(0, len(group), batch_size):
                yield [(sha1, pending[sha1]) for sha1 in group[i : i + batch_size]]

    def _encode_batch(self, batch: list[tuple[str, list[DramaLine]]], stats: TokenizeStats) -> None:
        codec = self.codec
        wavs = []
        for sha1, group in batch:
            wav_path = group[0].wav_path
            wav, _ = read_audio(wav_path, expect_sr=DATA_SAMPLE_RATE, expect_channels=2)
            if self.audio_hash(wav_path) != sha1:
                raise DataError(wav_path, "audio file changed while tokenizing; run tokenize again")
            wavs.append(codec.prepare_audio(wav, DATA_SAMPLE_RATE)[0])  # (2, S_i)
            stats.audio_seconds += wav.shape[1] / DATA_SAMPLE_RATE
        lengths = [w.shape[-1] for w in wavs]
        padded = torch.stack([F.pad(w, (0, max(lengths) - n)) for w, n in zip(wavs, lengths)])  # (B, 2, S)
        tokens = codec.encode(padded).cpu()  # (B, 2, n_q, T)
        for i, ((sha1, group), n) in enumerate(zip(batch, lengths)):
            frames = codec.num_frames(n)
            _save_tokens(self.entry_path(sha1), self._to_int16(tokens[i, ..., :frames]))
            for line in group:
                self._record(line, sha1, frames)
            stats.encoded += 1

    def _to_int16(self, tokens: torch.Tensor) -> np.ndarray:
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > np.iinfo(np.int16).max):
            raise RuntimeError(f"token values outside int16: [{int(tokens.min())}, {int(tokens.max())}]")
        return tokens.numpy().astype(np.int16)

    def _record(self, line: DramaLine, sha1: str, frames: int) -> None:
        rec = self._stats.get(str(Path(line.wav_path).resolve()))
        self._entries[line.key] = {
            "wav": _relative(Path(line.wav_path), self.root),
            "sha1": sha1,
            "frames": frames,
            "size": rec.size if rec else None,
            "mtime_ns": rec.mtime_ns if rec else None,
            "hashed_at_ns": rec.hashed_at_ns if rec else None,
        }

    # ----------------------------------------------------------------------------- manifest
    def write_manifest(self) -> None:
        """Rewrite manifest.json atomically."""
        atomic_write_json(
            self.manifest_path,
            {
                "format": MANIFEST_FORMAT,
                "codec_key": self.codec_key,
                "root": str(self.root.resolve()),
                "entries": self._entries,
            },
            indent=1,
        )

    def _read_manifest(self) -> None:
        """Known lines and their recorded file stats (a damaged manifest is ignored: entries
        never depend on it, it only saves hashing)."""
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            entries = data["entries"] if data.get("format") == MANIFEST_FORMAT else {}
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            return
        for line_key, entry in entries.items():
            try:
                wav = Path(entry["wav"])
                wav = wav if wav.is_absolute() else self.root / wav
                if entry.get("size") is not None:
                    self._stats[str(wav.resolve())] = _Stat(
                        int(entry["size"]), int(entry["mtime_ns"]), int(entry["hashed_at_ns"]), str(entry["sha1"])
                    )
                self._entries[line_key] = dict(entry)
            except (KeyError, TypeError, ValueError):
                continue


def _wav_path(item: LineOrPath) -> Path:
    return Path(item.wav_path) if isinstance(item, DramaLine) else Path(item)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())
