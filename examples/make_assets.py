"""Regenerate examples/assets/ with the project's own synthesiser (deterministic).

    .venv/bin/python examples/make_assets.py

Synthesises 6 English dramas with seed 1 (the demo model trained on seed 0: none of these lines
was seen in training; the 8 voices spk00..spk07 are the same in every synthetic dataset) and
copies out:

- prompts/<speaker>.wav: one binaural line per example speaker (spk01, spk04, spk06);
- left_static.npy: the 9-column pose of a static line on the listener's left, 45-135 degrees
  off the front (pose_file mode);
- video.mp4 + video.json: a drama video and the span of a lateral line in it (video mode), with
  the side the talker is on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "assets"
SPEAKERS = ("spk01", "spk04", "spk06")
SEED = 1


def _azimuth(pose: np.ndarray) -> float:
    x, y = pose[:, 0].mean(), pose[:, 1].mean()
    return float(np.degrees(np.arctan2(x, y)))


def main() -> None:
    from isdrama.data.mrsdrama import load_dataset
    from isdrama.data.synth.generator import SynthConfig, synthesize_dataset

    ASSETS.mkdir(parents=True, exist_ok=True)
    (ASSETS / "prompts").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SynthConfig(n_dramas=6, seed=SEED, language="en")
        synthesize_dataset(tmp, cfg, num_workers=1, progress=False)
        lines = load_dataset(Path(tmp)).lines
        for spk in SPEAKERS:
            line = next(ln for ln in lines if ln.speaker == spk and ln.end - ln.start >= 3.0)
            shutil.copyfile(line.wav_path, ASSETS / "prompts" / f"{spk}.wav")
        static_left = [
            ln for ln in lines if ln.pose_prompt.startswith("[STATIC]") and -135 < _azimuth(np.load(ln.pose_path)) < -45
        ]
        shutil.copyfile(static_left[0].pose_path, ASSETS / "left_static.npy")
        # a video span: a static line clearly on the right (the other side from the pose file)
        right = [
            ln
            for ln in lines
            if ln.pose_prompt.startswith("[STATIC]")
            and 45 < _azimuth(np.load(ln.pose_path)) < 135
            and ln.video_path is not None
            and ln.end - ln.start >= 2.0
        ]
        line = right[0]
        shutil.copyfile(line.video_path, ASSETS / "video.mp4")
        info = {
            "start": round(line.start, 3),
            "end": round(line.end, 3),
            "talker_azimuth_deg": round(_azimuth(np.load(line.pose_path)), 1),
            "side": "right",
            "source": f"synthetic drama {line.drama_id} (seed {SEED}), line {line.line_id}",
        }
        (ASSETS / "video.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"examples/assets written: {sorted(p.name for p in ASSETS.rglob('*') if p.is_file())}")


if __name__ == "__main__":
    main()
