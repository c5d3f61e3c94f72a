"""The published ISDrama IPD/ILD evaluation, stage by stage, as its scripts run it.

The independent reference for the tests and the baseline of the speed benchmark. It follows the
published `evaluate/gen_ipd_ild.py` (stage 1, one process per folder) and `evaluate/evaluate.py`
(stage 2) step for step, with the same library calls on the same shapes:

  stage 1, per wav:  read as float32 (2, N) (the published torchaudio.load needs torchcodec, absent
                     here; soundfile returns the same samples for PCM-16 and float files) ->
                     torchaudio.transforms.Resample(sr, 32000, dtype=float32) if sr != 32000 ->
                     NEW torchlibrosa STFT(1024, 320, 1024, 'hann', center, 'reflect') and
                     LogmelFilterBank(32000, 1024, 128, 50, 14000, ref 1, amin 1e-10, top_db None)
                     objects (built for every file, as published) -> real, imag (2, 1, T, 513) ->
                     per channel atan2 / sqrt(re^2 + im^2) -> IPD = phase_R - phase_L (not
                     wrapped), ILD = 20 log10((|R| + 1e-10) / (|L| + 1e-10)) -> (T, 513) @ melW
                     -> np.save({'IPD', 'ILD'}) as <out>/<name>_feature.npy
  stage 2, per pair: load both .npy dicts, crop to the common top-left, mean |a - b|, divided again
                     by the cropped row count (calculate_mae_time); report the mean over files x 100.

With ``--published-repo DIR`` (a checkout of github.com/AaronZ345/ISDrama), stage 1 calls that
checkout's own `evaluate/gen_ipd_ild.extract_feature` (its `utils/stft.py` is a copy of
torchlibrosa's) and stage 2 runs its `evaluate/evaluate.py` unchanged in a work folder laid out
as it expects (outputs/{gt,infer}/npy); torchaudio.load is replaced by the soundfile read above.
Its own command lines cannot run as published (gen_ipd_ild's main omits extract_feature's
output_dir; eval.sh has further defects), so this driver supplies the missing argument.

Usage:
  python bench/reference_eval_script.py GT_DIR INFER_DIR [--work DIR] [--published-repo DIR]
      both stages as separate processes (3 in all, as eval.sh runs them); prints the two figures
  python bench/reference_eval_script.py extract AUDIO_DIR OUT_DIR [--published-repo DIR]
  python bench/reference_eval_script.py evaluate WORK_DIR [--published-repo DIR]
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf
import torch
import torchaudio

SR = 32000


def load_float32(path: str) -> tuple[torch.Tensor, int]:
    """(channels, N) float32 and the rate: torchaudio.load's result for PCM-16 and float wavs."""
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), sr


def extract_feature(audio_path: str, output_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1 for one wav: the published features, saved as <output_dir>/<name>_feature.npy."""
    from torchlibrosa.stft import STFT, LogmelFilterBank

    waveform, orig_sr = load_float32(audio_path)
    if orig_sr != SR:
        waveform = torchaudio.transforms.Resample(orig_freq=orig_sr, new_freq=SR, dtype=waveform.dtype)(waveform)
    assert waveform.shape[0] == 2, "Input audio must be stereo (2 channels)."
    waveform = waveform.unsqueeze(0)  # (1, 2, N)
    stft = STFT(
        n_fft=1024,
        hop_length=320,
        win_length=1024,
        window="hann",
        center=True,
        pad_mode="reflect",
        freeze_parameters=True,
    )
    logmel = LogmelFilterBank(
        sr=SR, n_fft=1024, n_mels=128, fmin=50, fmax=14000, ref=1.0, amin=1e-10, top_db=None, freeze_parameters=True
    )
    b, c, n = waveform.shape
    real, imag = stft(waveform.reshape(b * c, n))  # (2, 1, T, 513)
    phase_l = torch.atan2(imag[0], real[0])
    phase_r = torch.atan2(imag[1], real[1])
    ipd = phase_r - phase_l  # (1, T, 513)
    mag_l = torch.sqrt(real[0] ** 2 + imag[0] ** 2)
    mag_r = torch.sqrt(real[1] ** 2 + imag[1] ** 2)
    eps = 1e-10
    ild = 20 * torch.log10((mag_r + eps) / (mag_l + eps))
    ipd_mel = torch.matmul(ipd.squeeze(0), logmel.melW).numpy()  # (T, 128)
    ild_mel = torch.matmul(ild.squeeze(0), logmel.melW).numpy()
    name = os.path.splitext(os.path.basename(audio_path))[0]
    np.save(os.path.join(output_dir, f"{name}_feature.npy"), {"IPD": ipd_mel, "ILD": ild_mel})
    return ipd_mel, ild_mel


def read_ipd_ild(npy_path: str) -> tuple[np.ndarray, np.ndarray]:
    d = np.load(npy_path, allow_pickle=True).item()
    return d["IPD"], d["ILD"]


def calculate_mae(a: np.ndarray, b: np.ndarray):
    rows = min(a.shape[0], b.shape[0])
    cols = min(a.shape[1], b.shape[1])
    return np.mean(np.abs(a[:rows, :cols] - b[:rows, :cols]))


def calculate_mae_time(a: np.ndarray, b: np.ndarray):
    """The published per-pair figure: MAE over the crop divided again by its frame count."""
    return calculate_mae(a, b) / min(a.shape[0], b.shape[0])


def _published_module(repo: str, name: str):
    """Import the checkout's evaluate/<name>.py, with torchaudio.load as `load_float32`."""
    sys.path.insert(0, os.path.join(repo, "evaluate"))
    torchaudio.load = load_float32
    return __import__(name)


def extract_dir(audio_dir: str, output_dir: str, published_repo: str | None = None) -> None:
    """Stage 1 over a folder (sorted *.wav, one file at a time, as published)."""
    os.makedirs(output_dir, exist_ok=True)
    fn = _published_module(published_repo, "gen_ipd_ild").extract_feature if published_repo else extract_feature
    for f in sorted(glob.glob(os.path.join(audio_dir, "*.wav"))):
        fn(f, output_dir)


def evaluate_features(gt_out: str, inf_out: str) -> dict:
    """Stage 2: per-file values and the x100 means (unrounded) over the infer features."""
    names, ipd_list, ild_list = [], [], []
    for pred in sorted(glob.glob(os.path.join(inf_out, "*_feature.npy"))):
        g_ipd, g_ild = read_ipd_ild(os.path.join(gt_out, os.path.basename(pred)))
        p_ipd, p_ild = read_ipd_ild(pred)
        names.append(os.path.basename(pred)[: -len("_feature.npy")])
        ipd_list.append(calculate_mae_time(g_ipd, p_ipd))
        ild_list.append(calculate_mae_time(g_ild, p_ild))
    return {
        "names": names,
        "ipd": np.array(ipd_list),
        "ild": np.array(ild_list),
        "ipd_mae_x100": sum(ipd_list) / len(ipd_list) * 100,
        "ild_mae_x100": sum(ild_list) / len(ild_list) * 100,
    }


def evaluate_dirs(gt_dir: str, infer_dir: str, work_dir: str) -> dict:
    """Both stages in this process (for tests): per-file values + x100 means."""
    gt_out, inf_out = os.path.join(work_dir, "gt"), os.path.join(work_dir, "infer")
    extract_dir(gt_dir, gt_out)
    extract_dir(infer_dir, inf_out)
    return evaluate_features(gt_out, inf_out)


def _run_stage(*args: str) -> str:
    return subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args], check=True, capture_output=True, text=True
    ).stdout


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] in ("extract", "evaluate"):
        ap = argparse.ArgumentParser(description="one stage of the published evaluation")
        ap.add_argument("stage")
        ap.add_argument("dirs", nargs="+")
        ap.add_argument("--published-repo", default=None)
        args = ap.parse_args(argv)
        if args.stage == "extract":
            extract_dir(args.dirs[0], args.dirs[1], args.published_repo)
        elif args.published_repo:  # its evaluate.py, unchanged, in the layout it expects
            os.chdir(args.dirs[0])
            sys.argv = ["evaluate.py"]
            path = os.path.join(args.published_repo, "evaluate", "evaluate.py")
            exec(compile(open(path).read(), path, "exec"), {"__name__": "__main__"})
        else:
            work = args.dirs[0]
            res = evaluate_features(os.path.join(work, "outputs/gt/npy"), os.path.join(work, "outputs/infer/npy"))
            print(f"IPD mae(x100): {round(res['ipd_mae_x100'], 4)}")
            print(f"ILD mae(x100): {round(res['ild_mae_x100'], 4)}")
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gt_dir")
    ap.add_argument("infer_dir")
    ap.add_argument("--work", default=None, help="folder for the .npy features (default: a temp dir)")
    ap.add_argument("--published-repo", default=None, help="a checkout of AaronZ345/ISDrama to run its own code")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or tmp
        extra = ["--published-repo", args.published_repo] if args.published_repo else []
        _run_stage("extract", args.gt_dir, os.path.join(work, "outputs/gt/npy"), *extra)
        _run_stage("extract", args.infer_dir, os.path.join(work, "outputs/infer/npy"), *extra)
        print(_run_stage("evaluate", work, *extra), end="")


if __name__ == "__main__":
    main()
