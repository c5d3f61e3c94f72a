"""Synthetic MRSDrama: whole dramas in the real layout (docs/data-format.md), from a seed.

    OUT/<room>/<drama>/<drama>.json                list of items (every documented key)
    OUT/<room>/<drama>/wav/<item_name>.wav         binaural 48 kHz PCM16, channel 0 = left
    OUT/<room>/<drama>/geometric_pose/<item_name>.npy   (T, 9) float32 at 187.5 frames/s
    OUT/<room>/<drama>/<drama>.mp4                 24 fps fixed-camera video of the drama
    OUT/<room>/<drama>/.synth_done                 written last: the config fingerprint

A drama takes place in one room (the set) with a per-drama listener orientation; 2-3 speakers
from a global voice pool take turns (no overlap, short gaps), each line spoken at the speaker's
mark or on a walk to another mark. Every drama draws from its own random stream
``default_rng([seed, index])`` (reverberation noise from a separate one, so switching reverb on
keeps the same lines and motion), so the output is byte-identical for a seed whatever the number
of workers, and ``n_dramas`` can grow later without changing the dramas already made. Dramas
whose marker holds the current fingerprint are skipped (resume); others are rebuilt from scratch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from isdrama.data.audio import write_audio
from isdrama.data.schema import DATA_SAMPLE_RATE
from isdrama.data.synth.geometry import facing_yaw, wrap_angle
from isdrama.data.synth.hrtf import HRTFConfig, HRTFSet, cached_hrtf
from isdrama.data.synth.prompts import pose_prompt
from isdrama.data.synth.render import RenderConfig, arrival_times, render_binaural
from isdrama.data.synth.room import DEFAULT_ROOMS, RoomConfig, RoomPlacement, marks
from isdrama.data.synth.text import LANGUAGES, join_lines, random_line
from isdrama.data.synth.trajectory import MotionConfig, SpeakerState, Trajectory, plan_line, pose_frames
from isdrama.data.synth.tts import EspeakError, SpeechLine, TTSConfig, Voice, speaker_pool, synthesize_line
from isdrama.data.synth.video import FigureTrack, VideoConfig, iter_frames, write_video
from isdrama.utils.io import atomic_save_npy, atomic_write_json, atomic_write_text

#: Name of the completion marker written last in every drama folder.
DONE_MARKER = ".synth_done"
LANGUAGE_MODES = (*LANGUAGES, "mixed")
#: Extra seed word of the acoustic random stream (late-reverb noise), kept apart from the drama's
#: own stream so switching reverberation on or off leaves text, voices and motion unchanged.
ACOUSTIC_STREAM = 1


class SynthError(RuntimeError):
    """A drama could not be generated (the message names the drama and the cause)."""


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the synthetic dataset (seconds, metres)."""

    n_dramas: int = 8
    seed: int = 0
    lines_per_drama: tuple[int, int] = (4, 8)  #: inclusive range
    sentences_per_line: tuple[int, int] = (1, 2)  #: inclusive; sets line durations (~2-9 s)
    speakers_per_drama: tuple[int, int] = (2, 3)  #: inclusive range
    speaker_pool_size: int = 8  #: global speakers spk00.. (voices fixed per id)
    language: str = "mixed"  #: en | zh | mixed (one language per drama)
    gap_range: tuple[float, float] = (0.1, 0.6)  #: pause between lines
    lead_in: float = 0.5  #: drama time of the first line
    tail: float = 0.5  #: video after the last line
    listener_yaw_range_deg: tuple[float, float] = (-180.0, 180.0)  #: listener turn in the room
    reverb: bool = False  #: image sources + late tail (slower)
    video: bool = True
    peak_limit: float = 0.97  #: a drama louder than this is scaled down
    mouth_open_db: float = 6.0  #: video mouth fully open at speech RMS + this
    drama_prefix: str = "synth"
    rooms: tuple[RoomConfig, ...] = DEFAULT_ROOMS  #: one set per room
    tts: TTSConfig = field(default_factory=TTSConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    hrtf: HRTFConfig = field(default_factory=HRTFConfig)
    video_config: VideoConfig = field(default_factory=VideoConfig)

    def __post_init__(self) -> None:
        def bad(name: str, msg: str) -> ValueError:
            return ValueError(f"SynthConfig.{name}: {msg}")

        for name in ("lines_per_drama", "speakers_per_drama", "sentences_per_line"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise bad(name, f"expected 1 <= min <= max, got {(lo, hi)}")
        if self.speakers_per_drama[1] > self.speaker_pool_size:
            raise bad(
                "speaker_pool_size", f"{self.speaker_pool_size} < speakers_per_drama max {self.speakers_per_drama[1]}"
            )
        if self.language not in LANGUAGE_MODES:
            raise bad("language", f"expected one of {LANGUAGE_MODES}, got {self.language!r}")
        if self.n_dramas < 0:
            raise bad("n_dramas", f"must be >= 0, got {self.n_dramas}")
        if not self.rooms:
            raise bad("rooms", "at least one room is needed")
        if min(r.n_marks for r in self.rooms) < self.speakers_per_drama[1] + 1:
            raise bad("rooms", "every room needs more marks than speakers in a drama")

    def fingerprint(self) -> str:
        """Hash of everything that shapes a drama (all fields but n_dramas)."""
        fields = dataclasses.asdict(self)
        fields.pop("n_dramas")
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class _Line:
    """A rendered line before writing."""

    item: dict
    audio: np.ndarray  # (2, N)
    pose: np.ndarray  # (T, 9)


@dataclass
class _Timeline:
    """A speaker's motion over the whole drama: knot times (K,), positions (K, 3), yaws (K,)."""

    times: list[float]
    positions: list[np.ndarray]
    yaws: list[float]
    mouth_segments: list[tuple[float, SpeechLine]] = field(default_factory=list)

    def add(self, offset: float, traj: Trajectory) -> None:
        self.times.extend(offset + traj.times)
        self.positions.extend(traj.positions)
        self.yaws.extend(traj.yaws)


def drama_name(config: SynthConfig, index: int) -> str:
    return f"{config.drama_prefix}{index:05d}"


def _drama_rng(config: SynthConfig, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, index])


def _word_durations(speech: SpeechLine, traj: Trajectory, n_samples: int) -> list[float]:
    """Word durations (s) of the received audio: emitted word boundaries mapped to arrival times.

    The boundaries move by the propagation delay (mean of the ears), so the words line up with
    the binaural wav; the durations still sum to its length.
    """
    sr = speech.sample_rate
    inner = np.cumsum(speech.samples)[:-1] / sr
    arrive = arrival_times(traj, inner).mean(axis=1) if len(inner) else inner
    edges = np.concatenate([[0.0], arrive, [n_samples / sr]])
    durations = np.diff(edges)
    if np.any(durations <= 0):
        raise SynthError("a word boundary moved past its neighbour after propagation")
    return [round(float(d), 6) for d in durations]


def _mouth_opening(speech: SpeechLine, times: np.ndarray, fps: float, level: float) -> np.ndarray:
    """Speech envelope (F,) 0..1 at line-local times: frame RMS relative to ``level``."""
    sr = speech.sample_rate
    half = int(sr / fps / 2)
    centre = np.round(times * sr).astype(np.int64)
    csum = np.concatenate([[0.0], np.cumsum(speech.audio**2)])
    lo = np.clip(centre - half, 0, len(speech.audio))
    hi = np.clip(centre + half, 0, len(speech.audio))
    rms = np.sqrt((csum[hi] - csum[lo]) / np.maximum(hi - lo, 1))
    opening = np.clip(rms / level, 0.0, 1.0)
    return np.where((times >= 0) & (times <= len(speech.audio) / sr), opening, 0.0)


def _initial_states(
    rng: np.random.Generator, n_speakers: int, floor_marks: np.ndarray, placement: RoomPlacement, cfg: MotionConfig
) -> list[SpeakerState]:
    chosen = rng.choice(len(floor_marks), size=n_speakers, replace=False)
    states = []
    for m in chosen:
        sitting = rng.random() < cfg.sitting_probability
        height = rng.uniform(*(cfg.sitting_mouth_height if sitting else cfg.standing_mouth_height))
        pos = placement.to_listener(np.array([[*floor_marks[m], height]]))[0]
        jitter = np.radians(rng.uniform(-cfg.facing_jitter_deg, cfg.facing_jitter_deg))
        yaw = float(wrap_angle(facing_yaw(-pos) + jitter))
        states.append(
            SpeakerState(
                position=pos,
                yaw=yaw,
                posture="sitting" if sitting else "standing",
                mark=int(m),
                mouth_height=float(height),
            )
        )
    return states


def _turns(rng: np.random.Generator, n_lines: int, n_speakers: int) -> list[int]:
    """Speaker index per line; consecutive lines change speaker when there are several."""
    order = [int(rng.integers(n_speakers))]
    for _ in range(n_lines - 1):
        if n_speakers == 1:
            order.append(0)
        else:
            step = 1 + int(rng.integers(n_speakers - 1))
            order.append((order[-1] + step) % n_speakers)
    return order


def _write_video(
    path: Path, timelines: list[_Timeline], identities: list[int], duration: float, config: SynthConfig
) -> None:
    vcfg = config.video_config
    n_frames = int(np.ceil(duration * vcfg.fps))
    t = np.arange(n_frames) / vcfg.fps
    level = 10 ** ((config.tts.speech_rms_dbfs + config.mouth_open_db) / 20)
    tracks = []
    for tl, ident in zip(timelines, identities):
        times = np.asarray(tl.times)
        pos = np.asarray(tl.positions)
        yaws = np.unwrap(np.asarray(tl.yaws))
        positions = np.stack([np.interp(t, times, pos[:, c]) for c in range(3)], axis=-1)
        mouth = np.zeros(n_frames)
        talking = np.zeros(n_frames, dtype=bool)
        for start, speech in tl.mouth_segments:
            mouth = np.maximum(mouth, _mouth_opening(speech, t - start, vcfg.fps, level))
            talking |= (t >= start) & (t <= start + len(speech.audio) / speech.sample_rate)
        tracks.append(
            FigureTrack(
                identity=ident, positions=positions, yaws=np.interp(t, times, yaws), mouth=mouth, talking=talking
            )
        )
    floor_z = -config.motion.listener_ear_height
    write_video(path, iter_frames(tracks, n_frames, floor_z, vcfg), vcfg)


def _render_lines(
    config: SynthConfig,
    index: int,
    hrtf: HRTFSet,
    voices: tuple[Voice, ...],
) -> tuple[str, RoomConfig, list[_Line], list[_Timeline], list[int], float]:
    """All lines of drama ``index`` in memory: (name, room, lines, timelines, speaker ids, end)."""
    rng = _drama_rng(config, index)
    name = drama_name(config, index)
    sr = hrtf.sample_rate
    room = config.rooms[int(rng.integers(len(config.rooms)))]
    motion = config.motion
    placement = RoomPlacement(
        room, float(np.radians(rng.uniform(*config.listener_yaw_range_deg))), motion.listener_ear_height
    )
    floor_marks = marks(room, motion.distance_range)
    language = config.language if config.language != "mixed" else LANGUAGES[int(rng.integers(len(LANGUAGES)))]
    n_speakers = int(rng.integers(config.speakers_per_drama[0], config.speakers_per_drama[1] + 1))
    speaker_ids = [int(s) for s in rng.choice(len(voices), size=n_speakers, replace=False)]
    states = _initial_states(rng, n_speakers, floor_marks, placement, motion)
    timelines = [_Timeline([0.0], [s.position], [s.yaw]) for s in states]
    n_lines = int(rng.integers(config.lines_per_drama[0], config.lines_per_drama[1] + 1))
    lines: list[_Line] = []
    clock = config.lead_in
    for line_no, who in enumerate(_turns(rng, n_lines, n_speakers)):
        voice, state = voices[speaker_ids[who]], states[who]
        n_sentences = int(rng.integers(config.sentences_per_line[0], config.sentences_per_line[1] + 1))
        text = join_lines([random_line(rng, language) for _ in range(n_sentences)])
        speech = synthesize_line(text, voice, rng, config.tts)
        n = len(speech.audio)
        duration = n / sr
        mark_xyz = np.concatenate([floor_marks, np.full((len(floor_marks), 1), state.mouth_height)], axis=1)
        occupied = {s.mark for i, s in enumerate(states) if i != who and s.mark is not None}
        traj, end_mark = plan_line(rng, state, placement.to_listener(mark_xyz), occupied, duration, motion)
        audio = render_binaural(
            speech.audio,
            traj,
            hrtf,
            n,
            config.render,
            room=placement if config.reverb else None,
            rng=np.random.default_rng([config.seed, index, line_no, ACOUSTIC_STREAM]),
        )
        start = np.ceil(clock * 1000 - 1e-6) / 1000
        end = start + duration
        item_name = f"{name}_{start:.3f}_{end:.3f}_{voice.speaker}"
        item = {
            "item_name": item_name,
            "speaker": voice.speaker,
            "raw_txt": speech.text,
            "word": list(speech.words),
            "word_dur": _word_durations(speech, traj, n),
            "start_time": round(float(start), 6),
            "end_time": round(float(end), 6),
            "wav_fn": f"wav/{item_name}.wav",
            "pos_fn": f"geometric_pose/{item_name}.npy",
            "spatial_prompt": pose_prompt(traj, rng),
            "scene": room.name,
            "language": language,
        }
        if config.video:
            item["video_fn"] = f"{name}.mp4"
        lines.append(_Line(item=item, audio=audio, pose=traj.pose(pose_frames(n))))
        timelines[who].add(start, traj)
        timelines[who].mouth_segments.append((start, speech))
        state.position, state.yaw, state.mark = traj.end, float(wrap_angle(traj.yaws[-1])), end_mark
        clock = end + rng.uniform(*config.gap_range)
    return name, room, lines, timelines, speaker_ids, float(lines[-1].item["end_time"])


def generate_drama(out_root: Path | str, config: SynthConfig, index: int) -> Path:
    """Generate (or skip, when complete with this config) drama ``index``; returns its folder."""
    name = drama_name(config, index)
    try:
        return _generate_drama(Path(out_root), config, index)
    except Exception as exc:
        raise SynthError(f"drama {name} (index {index}, seed {config.seed}): {type(exc).__name__}: {exc}") from None


def _find_done(out_root: Path, config: SynthConfig, name: str) -> Optional[Path]:
    for room in config.rooms:
        marker = out_root / room.name / name / DONE_MARKER
        if marker.is_file() and marker.read_text().strip() == config.fingerprint():
            return marker.parent
    return None


def _generate_drama(out_root: Path, config: SynthConfig, index: int) -> Path:
    name = drama_name(config, index)
    done = _find_done(out_root, config, name)
    if done is not None:
        return done
    for room in config.rooms:  # stale or partial output of this drama
        stale = out_root / room.name / name
        if stale.is_dir():
            shutil.rmtree(stale)
    hrtf = cached_hrtf(config.hrtf)
    voices = speaker_pool(config.speaker_pool_size, config.tts)
    name, room, lines, timelines, speaker_ids, end = _render_lines(config, index, hrtf, voices)
    drama_dir = out_root / room.name / name
    peak = max(float(np.abs(line.audio).max()) for line in lines)
    scale = min(1.0, config.peak_limit / peak) if peak > 0 else 1.0
    for line in lines:
        write_audio(drama_dir / line.item["wav_fn"], line.audio * scale, hrtf.sample_rate)
        atomic_save_npy(drama_dir / line.item["pos_fn"], line.pose)
    if config.video:
        _write_video(drama_dir / f"{name}.mp4", timelines, speaker_ids, end + config.tail, config)
    atomic_write_json(drama_dir / f"{name}.json", [line.item for line in lines])
    atomic_write_text(drama_dir / DONE_MARKER, config.fingerprint() + "\n")
    return drama_dir


def _check_inputs(config: SynthConfig) -> None:
    """Fail early, in the parent, on a missing espeak-ng or SOFA file."""
    if shutil.which(config.tts.espeak_binary) is None:
        raise EspeakError(f"'{config.tts.espeak_binary}' not found on PATH; install it (apt-get install espeak-ng)")
    if config.hrtf.sample_rate != DATA_SAMPLE_RATE:
        raise ValueError(f"SynthConfig.hrtf.sample_rate must be {DATA_SAMPLE_RATE} (MRSDrama audio)")
    cached_hrtf(config.hrtf)


def synthesize_dataset(
    out_root: Path | str, config: SynthConfig, num_workers: int = 1, progress: bool = True
) -> list[Path]:
    """Write ``config.n_dramas`` dramas under ``out_root``; returns their folders (sorted).

    num_workers > 1 generates dramas in parallel processes; the result does not depend on it.
    Complete dramas from an earlier run with the same config are kept (resume).
    """
    from tqdm import tqdm

    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    _check_inputs(config)
    indices = range(config.n_dramas)
    bar = tqdm(total=len(indices), desc="synth", unit="drama", disable=not progress)
    folders: list[Path] = []
    try:
        if num_workers <= 1:
            for i in indices:
                folders.append(generate_drama(out_root, config, i))
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx) as pool:
                futures = [pool.submit(generate_drama, out_root, config, i) for i in indices]
                for fut in as_completed(futures):
                    folders.append(fut.result())
                    bar.update()
    finally:
        bar.close()
    return sorted(folders)


def summarize(folders: list[Path]) -> dict:
    """Counts over generated drama folders: dramas, lines, seconds of audio, speakers, languages, sets."""
    lines, seconds, speakers, languages, sets = 0, 0.0, set(), set(), set()
    for folder in folders:
        items = json.loads((folder / f"{folder.name}.json").read_text(encoding="utf-8"))
        lines += len(items)
        seconds += sum(it["end_time"] - it["start_time"] for it in items)
        speakers.update(it["speaker"] for it in items)
        languages.update(it["language"] for it in items)
        sets.add(folder.parent.name)
    return {
        "dramas": len(folders),
        "lines": lines,
        "seconds": seconds,
        "speakers": sorted(speakers),
        "languages": sorted(languages),
        "sets": sorted(sets),
    }
