"""A straightforward per-file re-implementation of the published ISDrama IPD/ILD evaluation.

This is the independent reference for tests and the benchmark: one file at a time, numpy and
librosa, following evaluate/gen_ipd_ild.py + evaluate/evaluate.py of the published code:

  extract (per wav):  soundfile read (the published code uses torchaudio.load: same float32
                      samples) -> torchaudio.transforms.Resample(sr, 32000) if sr != 32000 ->
                      librosa.stft(n_fft 1024, hop 320, win 1024, hann, center, reflect) ->
                      IPD = angle(R) - angle(L) (not wrapped), ILD = 20 log10((|R|+1e-10)/(|L|+1e-10))
                      -> (T, 513) @ librosa.filters.mel(32000, 1024, 128, 50, 14000) -> (T, 128)
                      -> np.save({'IPD', 'ILD'}) to <out>/<name>_feature.npy
  evaluate (per pair): load both npy dicts, crop to the common top-left, mean |a - b|, divide
                      again by the cropped row count; report mean over files x 100.

Usage:  python bench/reference_eval_script.py GT_DIR INFER_DIR [--work DIR]
"""
from __future__ import annotations

import argparse
import glob
import os
import tempfile

import librosa
import numpy as np
import soundfile as sf
import torch
import torchaudio

SR = 32000


def extract_feature(audio_path: str, output_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Published features of one binaural wav, saved as <output_dir>/<name>_feature.npy."""
    data, orig_sr = sf.read(audio_path, dtype="float32", always_2d=True)
    waveform = torch.from_numpy(np.ascontiguousarray(data.T))  # (2, N)
    assert waveform.shape[0] == 2, f"{audio_path}: input audio must be stereo (2 channels)"
    if orig_sr != SR:
        resampler = torchaudio.transforms.Resample(orig_freq=orig_sr, new_freq=SR, dtype=waveform.dtype)
        waveform = resampler(waveform)
    x = waveform.numpy()
    spec = librosa.stft(x, n_fft=1024, hop_length=320, win_length=1024, window="hann",
                        center=True, pad_mode="reflect")  # (2, 513, T)
    left, right = spec[0], spec[1]
    ipd = np.angle(right) - np.angle(left)  # (513, T), not wrapped
    eps = 1e-10
    ild = 20 * np.log10((np.abs(right) + eps) / (np.abs(left) + eps))
    mel_w = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=128, fmin=50, fmax=14000).T  # (513, 128)
    ipd_mel = ipd.T @ mel_w  # (T, 128)
    ild_mel = ild.T @ mel_w
    name = os.path.splitext(os.path.basename(audio_path))[0]
    np.save(os.path.join(output_dir, f"{name}_feature.npy"), {"IPD": ipd_mel, "ILD": ild_mel})
    return ipd_mel, ild_mel


def read_ipd_ild(npy_path: str) -> tuple[np.ndarray, np.ndarray]:
    d = np.load(npy_path, allow_pickle=True).item()
    return d["IPD"], d["ILD"]


def calculate_mae(a: np.ndarray, b: np.ndarray) -> float:
    rows = min(a.shape[0], b.shape[0])
    cols = min(a.shape[1], b.shape[1])
    return float(np.mean(np.abs(a[:rows, :cols] - b[:rows, :cols])))


def calculate_mae_time(a: np.ndarray, b: np.ndarray) -> float:
    """The published per-pair figure: MAE over the crop divided again by its frame count."""
    return calculate_mae(a, b) / min(a.shape[0], b.shape[0])


def evaluate_dirs(gt_dir: str, infer_dir: str, work_dir: str) -> dict:
    """Extract every wav of both folders, then score pairs by name. Per-file values + x100 means."""
    gt_out, inf_out = os.path.join(work_dir, "gt"), os.path.join(work_dir, "infer")
    os.makedirs(gt_out, exist_ok=True)
    os.makedirs(inf_out, exist_ok=True)
    for f in sorted(glob.glob(os.path.join(gt_dir, "*.wav"))):
        extract_feature(f, gt_out)
    for f in sorted(glob.glob(os.path.join(infer_dir, "*.wav"))):
        extract_feature(f, inf_out)
    names, ipd_list, ild_list = [], [], []
    for pred in sorted(glob.glob(os.path.join(inf_out, "*_feature.npy"))):
        gt = os.path.join(gt_out, os.path.basename(pred))
        g_ipd, g_ild = read_ipd_ild(gt)
        p_ipd, p_ild = read_ipd_ild(pred)
        names.append(os.path.basename(pred)[: -len("_feature.npy")])
        ipd_list.append(calculate_mae_time(g_ipd, p_ipd))
        ild_list.append(calculate_mae_time(g_ild, p_ild))
    return {"names": names, "ipd": np.array(ipd_list), "ild": np.array(ild_list),
            "ipd_mae_x100": sum(ipd_list) / len(ipd_list) * 100,
            "ild_mae_x100": sum(ild_list) / len(ild_list) * 100}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gt_dir")
    ap.add_argument("infer_dir")
    ap.add_argument("--work", default=None, help="folder for the .npy features (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = evaluate_dirs(args.gt_dir, args.infer_dir, args.work or tmp)
    print(f"IPD mae(x100): {round(res['ipd_mae_x100'], 4)}")
    print(f"ILD mae(x100): {round(res['ild_mae_x100'], 4)}")


if __name__ == "__main__":
    main()
