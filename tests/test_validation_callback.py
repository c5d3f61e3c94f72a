"""ValidationAudioCallback under a real pl.Trainer: logged values against independent computations,
the fixed line set, every_n_epochs, logger=False / CSV / W&B offline, DDP-synced metric states,
and the clear errors.

The tiny module's "generation" is the ground truth with the right ear scaled by a known gain per
line (optionally delayed), so the expected ILD error is 20 log10(gain) dB by hand and the IPD error
is 0; delayed copies are checked against isdrama.metrics.spatial.spatial_errors called directly.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
from float_tolerance import LEVEL_ATOL, PHASE_ATOL, corrected_spatial_rtol
from torch.utils.data import DataLoader, Dataset, TensorDataset

from isdrama.callbacks import GeneratedAudio, ValidationAudioCallback
from isdrama.callbacks.generation import take_lines
from isdrama.callbacks.metric_states import MeanOfItems, SpatialASTState, SpatialMAEState
from isdrama.metrics.spatial import SpatialMAEConfig, spatial_errors

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

SR = 48_000
N = 12_000  # 0.25 s
N_VAL = 6
GAINS = [1.5 ** (i + 1) for i in range(N_VAL)]  # right-ear gain of generated line i

# float32 rounding of spatial_errors on these lines, which the callback may score in other batches
# (4 lines as 3 + 1, ...) than a direct call, so its sums run in other orders: bounds from
# tests/float_tolerance.py for T = 26 frames (0.25 s), 446 bins, 128 bands
_CUES = SpatialMAEConfig().cues
T_FRAMES = 1 + (N * _CUES.sample_rate // SR) // _CUES.hop_length  # 26
MAE_RTOL, BAND_RTOL = corrected_spatial_rtol(T_FRAMES)  # 1.3e-4, 1.1e-4
IPD_ATOL = PHASE_ATOL  # 7.6e-6 rad


def line_audio(i: int) -> torch.Tensor:
    """(2, N) voiced binaural line i: 150 + 30 i Hz harmonic tone + noise; right = 0.7 x left delayed 8 samples."""
    rng = np.random.default_rng(i)
    t = np.arange(N + 8) / SR
    f0 = 150.0 + 30.0 * i
    tone = sum(np.sin(2 * np.pi * k * f0 * t + k) / k for k in range(1, 11)) * 0.1
    mono = tone + 0.01 * rng.standard_normal(t.size)
    left, right = mono[8:], 0.7 * mono[:-8]
    return torch.from_numpy(np.stack([left, right]).astype(np.float32))


def render(gt: torch.Tensor, idx: torch.Tensor, gains, delay: int = 0, shift: int = 0) -> torch.Tensor:
    """Generated copy: right ear x gains[idx], delayed by ``delay`` samples (zeros in front); with
    ``shift``, built from line idx + shift (another pitch) instead of gt."""
    gen = gt.clone() if not shift else torch.stack([line_audio((int(i) + shift) % N_VAL) for i in idx]).to(gt)
    g = torch.tensor([gains[int(i)] for i in idx], dtype=gt.dtype, device=gt.device)
    right = gt[:, 1] * g[:, None]
    if delay:
        right = torch.nn.functional.pad(right, (delay, 0))[:, : gt.shape[-1]]
    gen[:, 1] = right
    return gen


class Lines(Dataset):
    def __len__(self):
        return N_VAL

    def __getitem__(self, i):
        return {"idx": i, "wav": line_audio(i)}


class TinyData(pl.LightningDataModule):
    def __init__(self, batch_size: int = 3, shuffle_val: bool = False, seed: int = 3):
        super().__init__()
        self.batch_size, self.shuffle_val, self.seed = batch_size, shuffle_val, seed

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)

    def val_dataloader(self):
        gen = torch.Generator().manual_seed(self.seed) if self.shuffle_val else None
        return DataLoader(Lines(), batch_size=self.batch_size, shuffle=self.shuffle_val, generator=gen)


class GainModule(pl.LightningModule):
    """Generates gt with the right ear scaled by ``gains[idx]`` (and delayed by ``delay``)."""

    def __init__(self, gains=GAINS, delay: int = 0, shift: int = 0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.gains, self.delay, self.shift = list(gains), delay, shift
        self.generated: list[tuple[int, list[int]]] = []  # (epoch, line ids) per call
        self.val_seen: dict[int, list[int]] = {}  # epoch -> validation order

    def training_step(self, batch, batch_idx):
        return ((self.w * batch[0]) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        if not self.trainer.sanity_checking:
            self.val_seen.setdefault(self.current_epoch, []).extend(batch["idx"].tolist())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def generate_validation_audio(self, batch) -> GeneratedAudio:
        assert not self.training and not torch.is_grad_enabled()
        idx, gt = batch["idx"], batch["wav"]
        self.generated.append((self.current_epoch, idx.tolist()))
        gen = render(gt, idx, self.gains, self.delay, self.shift)
        return GeneratedAudio(
            gen, torch.full((len(idx),), gen.shape[-1]), SR, [f"line{int(i)}" for i in idx], gt_wav=gt
        )


class NoGeneration(GainModule):
    generate_validation_audio = None  # type: ignore[assignment]


def trainer(tmp_path, callbacks, logger=False, max_epochs=1, **kw):
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        **kw,
    )


def expected_ild_db(ids) -> float:
    return float(np.mean([20 * math.log10(GAINS[i]) for i in ids]))


# ------------------------------------------------------------------------------------------ tests
def test_values_fixed_lines_every_n_and_csv_files(tmp_path, one_torch_thread):
    """4 epochs, every 2: runs after epochs 1 and 3 on the same 4 lines although the shuffled
    validation order changes; ILD = mean 20 log10 g (by hand), IPD = 0, FFE = direct ffe();
    CSV metrics and media files written."""
    from pytorch_lightning.loggers import CSVLogger

    from isdrama.metrics.speech import ffe

    cb = ValidationAudioCallback(every_n_epochs=2, num_lines=4, metrics=("ipd", "ild", "ffe"), log_audio=2)
    module = GainModule()
    logger = CSVLogger(tmp_path, name="csv")
    tr = trainer(tmp_path, [cb], logger=logger, max_epochs=4)
    tr.fit(module, datamodule=TinyData(batch_size=3, shuffle_val=True))

    assert [e for e, _ in module.generated] == [1, 1, 3, 3]  # every_n_epochs=2; 4 lines = 3 + 1 of a batch
    first = module.val_seen[0][:4]
    assert module.val_seen[0] != module.val_seen[2]  # the loader really reshuffles...
    runs = {e: sum((ids for ep, ids in module.generated if ep == e), []) for e in (1, 3)}
    assert runs[1] == runs[3] == first  # ...but the scored lines stay the first 4 of epoch 0

    ild = float(tr.callback_metrics["val_audio/ild_mae"])
    assert ild == pytest.approx(expected_ild_db(first), abs=2e-3)
    assert float(tr.callback_metrics["val_audio/ipd_mae"]) < 1e-3
    gt = torch.stack([line_audio(i) for i in first])
    direct = spatial_errors(gt, render(gt, torch.tensor(first), GAINS), SR)
    assert ild == pytest.approx(float(direct.ild.mean()), rel=MAE_RTOL)  # scored as 3 + 1 vs 4 lines
    want_ffe = np.mean([ffe(g.numpy(), h.numpy(), SR).ffe for g, h in zip(gt, render(gt, torch.tensor(first), GAINS))])
    assert float(tr.callback_metrics["val_audio/ffe"]) == pytest.approx(want_ffe, abs=1e-6)

    with open(Path(logger.log_dir) / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    logged = {int(r["epoch"]): float(r["val_audio/ild_mae"]) for r in rows if r.get("val_audio/ild_mae")}
    assert sorted(logged) == [1, 3] and logged[1] == pytest.approx(logged[3], rel=1e-6)
    folder = Path(logger.log_dir) / "val_audio" / "epoch_003"
    wavs = sorted(folder.glob("*_gen.wav"))
    assert len(wavs) == 2 and len(list(folder.glob("*_gt.wav"))) == 2
    assert len(list(folder.glob("*_spectrogram.png"))) == 2 and (folder / "band_errors.png").stat().st_size > 0
    assert len(list(folder.glob("*_ild_over_time.png"))) == 2
    wav, sr = sf.read(wavs[0], dtype="float32")
    i0 = first[0]
    assert sr == SR and wav.shape == (N, 2) and wavs[0].name == f"00_line{i0}_gen.wav"
    np.testing.assert_array_equal(wav.T, render(line_audio(i0)[None], torch.tensor([i0]), GAINS)[0].numpy())
    report = json.loads((folder / "metrics.json").read_text())
    assert report["metrics"]["ild_mae"] == pytest.approx(ild, rel=1e-6)


def test_identical_audio_gives_zero_and_runs_without_logger(tmp_path, one_torch_thread):
    """logger=False, 2 epochs: the runs complete, values reach callback_metrics, nothing is written;
    ANG without a checkpoint and CER without its ASR model are skipped with ONE warning each over
    both epochs, and never logged."""
    import warnings

    cb = ValidationAudioCallback(
        every_n_epochs=1,
        num_lines=2,
        metrics=("ipd", "ild", "ang", "cer", "ffe"),
        log_audio=2,
        speech={"asr": {"backend": "faster_whisper", "model": str(tmp_path / "no_such_model")}},
    )
    module = GainModule(gains=[1.0] * N_VAL)
    tr = trainer(tmp_path, [cb], max_epochs=2, limit_train_batches=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.fit(module, datamodule=TinyData())
    skipped = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert sum("ang skipped: no SpatialAST checkpoint" in m for m in skipped) == 1, skipped
    assert sum("cer skipped" in m and "no_such_model" in m for m in skipped) == 1, skipped
    assert [e for e, _ in module.generated] == [0, 1]  # scored after both epochs
    # identical audio: 0 up to rounding (0 exactly where gt and gen bins meet the same kernels;
    # torch's vectorised atan2 and its scalar tail differ by an ulp for the same input);
    # FFE counts frames of identical pitch tracks: exactly 0
    assert 0.0 <= cb.results["ipd_mae"] <= IPD_ATOL and 0.0 <= cb.results["ild_mae"] <= LEVEL_ATOL
    assert cb.results["ffe"] == 0.0
    assert 0.0 <= float(tr.callback_metrics["val_audio/ild_mae"]) <= LEVEL_ATOL
    assert "ang" in cb.skipped and "cer" in cb.skipped
    for key in ("ang_cos", "angle_error_deg", "cer", "wer"):
        assert key not in cb.results and f"val_audio/{key}" not in tr.callback_metrics
    assert cb.line_names == ["line0", "line1"]
    assert not list(Path(tmp_path).rglob("*.wav")) and not list(Path(tmp_path).rglob("*.png"))


def test_delayed_other_pitch_matches_direct_computation(tmp_path, one_torch_thread):
    """Generated = another line (other pitch) with a 5-sample right-ear delay: non-zero IPD and FFE;
    logged values = spatial_errors and ffe() called directly on the same audio."""
    from isdrama.metrics.speech import ffe

    cb = ValidationAudioCallback(num_lines=3, metrics=("ipd", "ild", "ffe"), log_audio=0, log_plots=False)
    tr = trainer(tmp_path, [cb])
    gains = [1.0, 2.0, 0.5, 1.0, 1.0, 1.0]
    tr.fit(GainModule(gains=gains, delay=5, shift=3), datamodule=TinyData(batch_size=2))
    gt = torch.stack([line_audio(i) for i in range(3)])
    gen = render(gt, torch.arange(3), gains, delay=5, shift=3)
    direct = spatial_errors(gt, gen, SR)
    want_ffe = float(np.mean([ffe(g.numpy(), h.numpy(), SR).ffe for g, h in zip(gt, gen)]))
    assert float(direct.ipd.mean()) > 0.05 and want_ffe > 0.1  # the delay and the pitch change are visible
    # batches of 2 + 1 lines vs 3: float32 sums in other orders (see MAE_RTOL, IPD_ATOL)
    assert float(tr.callback_metrics["val_audio/ipd_mae"]) == pytest.approx(
        float(direct.ipd.mean()), rel=MAE_RTOL, abs=IPD_ATOL
    )
    assert float(tr.callback_metrics["val_audio/ild_mae"]) == pytest.approx(float(direct.ild.mean()), rel=MAE_RTOL)
    # FFE is a ratio of frame counts from the same float64 pitch tracks of the same audio
    assert float(tr.callback_metrics["val_audio/ffe"]) == pytest.approx(want_ffe, abs=1e-9)


def test_wandb_offline_run_gets_media(tmp_path, one_torch_thread):
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    logger = WandbLogger(project="isdrama-tests", save_dir=str(tmp_path), offline=True)
    cb = ValidationAudioCallback(num_lines=2, metrics=("ipd", "ild"), log_audio=2)
    try:
        tr = trainer(tmp_path, [cb], logger=logger)
        tr.fit(GainModule(), datamodule=TinyData(batch_size=2))
    finally:
        wandb.finish()
    assert float(tr.callback_metrics["val_audio/ild_mae"]) == pytest.approx(expected_ild_db([0, 1]), abs=2e-3)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    audio = sorted((runs[0] / "files" / "media" / "audio").rglob("*.wav"))
    images = sorted((runs[0] / "files" / "media" / "images").rglob("*.png"))
    assert len(audio) == 4  # 2 generated + 2 ground truth, stereo
    assert all(sf.info(p).channels == 2 for p in audio)
    assert len(images) == 5  # 2 spectrograms + 2 ILD-over-time curves + the per-band error plot


def test_metric_states_merge_and_nan_handling():
    """Two instances scoring halves, merged = one instance scoring all = the mean by hand; with a
    2-sample delay (a real IPD error) and without (IPD only rounding noise)."""
    ids = [0, 1, 2, 3]
    gt = torch.stack([line_audio(i) for i in ids])
    cfg = SpatialMAEConfig()
    for delay in (0, 2):
        gen = render(gt, torch.tensor(ids), GAINS, delay=delay)
        whole, a, b = SpatialMAEState(cfg), SpatialMAEState(cfg), SpatialMAEState(cfg)
        whole.update(gt, gen, SR)
        a.update(gt[:1], gen[:1], SR)
        b.update(gt[1:], gen[1:], SR)
        a.merge_state(b)
        ra, rw = a.compute(), whole.compute()
        if delay == 0:
            assert float(ra["ild_mae"]) == pytest.approx(expected_ild_db(ids), abs=2e-3)
            assert float(ra["ipd_mae"]) <= IPD_ATOL and float(rw["ipd_mae"]) <= IPD_ATOL  # same phases
        else:
            assert float(ra["ipd_mae"]) > 0.5
        # the states are float64 sums (exact to ~1e-16), but each item's float32 values come from a
        # batch of 1 or 3 vs 4 lines, whose sums run in other orders: MAE_RTOL, BAND_RTOL, IPD_ATOL
        assert float(ra["ipd_mae"]) == pytest.approx(float(rw["ipd_mae"]), rel=MAE_RTOL, abs=IPD_ATOL)
        assert float(ra["ild_mae"]) == pytest.approx(float(rw["ild_mae"]), rel=MAE_RTOL)
        torch.testing.assert_close(ra["ild_bands"], rw["ild_bands"], rtol=BAND_RTOL, atol=0, equal_nan=True)
        torch.testing.assert_close(ra["ipd_bands"], rw["ipd_bands"], rtol=BAND_RTOL, atol=IPD_ATOL, equal_nan=True)
        assert ra["ild_bands"].shape == (128,)
    m = MeanOfItems(("x", "y"))
    m.update({"x": [1.0, float("nan"), 3.0]})
    assert m.compute() == {"x": torch.tensor(2.0, dtype=torch.float64)}  # NaN not counted, y absent
    with pytest.raises(KeyError, match="unknown key 'z'"):
        m.update({"z": [1.0]})


def test_spatial_ast_state_equals_file_pipeline(tmp_path, one_torch_thread):
    """The in-memory ANG/DIS state agrees with spatial_ast_scores on the same audio as files."""
    from isdrama.metrics.spatial_ast import SpatialAST, SpatialASTConfig, SpatialASTMetricConfig, spatial_ast_scores

    torch.manual_seed(0)
    model = SpatialAST(SpatialASTConfig(embed_dim=32, depth=1, num_heads=2))
    gt = torch.stack([line_audio(i) for i in range(2)])
    gen = render(gt, torch.arange(2), GAINS, delay=20)
    paths = []
    for tag, wavs in (("gt", gt), ("gen", gen)):
        for i, w in enumerate(wavs):
            p = tmp_path / tag / f"l{i}.wav"
            p.parent.mkdir(exist_ok=True)
            sf.write(p, w.T.numpy(), SR, subtype="FLOAT")
            paths.append(p)
    cfg = SpatialASTMetricConfig()
    want = spatial_ast_scores(model, paths[:2], paths[2:], cfg).summary()
    state = SpatialASTState(model, cfg, heads=True)
    state.update(gt, gen, SR, torch.full((2,), N), torch.full((2,), N))
    got = state.compute()
    for k in ("ang_cos", "dis_cos", "angle_error_deg", "distance_error_m"):
        assert float(got[k]) == pytest.approx(want[k], abs=1e-5), k
    same = SpatialASTState(model, cfg, heads=True)
    same.update(gt, gt, SR, torch.full((2,), N), torch.full((2,), N))
    assert float(same.compute()["ang_cos"]) == pytest.approx(1.0, abs=1e-6)


def test_module_without_generation_method_is_refused_at_setup(tmp_path):
    cb = ValidationAudioCallback(metrics=("ipd",))
    with pytest.raises(TypeError, match=r"NoGeneration has no method generate_validation_audio\(batch\)"):
        trainer(tmp_path, [cb]).fit(NoGeneration(), datamodule=TinyData())


def test_bad_arguments_and_bad_generator_output(tmp_path):
    with pytest.raises(ValueError, match="unknown or empty.*'pesq'"):
        ValidationAudioCallback(metrics=("ipd", "pesq"))
    with pytest.raises(ValueError, match=r"spatial: unknown key\(s\) \['energy_db'\]"):
        ValidationAudioCallback(spatial={"energy_db": -40})
    with pytest.raises(ValueError, match=r"wav of shape \(2, 100\); expected \(B, 2, S\)"):
        GeneratedAudio(torch.zeros(2, 100), torch.tensor([100, 100]), SR, ["a", "b"]).validate()
    with pytest.raises(ValueError, match=r"lengths=\[100, 200\]; expected 2 values in \[1, 100\]"):
        GeneratedAudio(torch.zeros(2, 2, 100), torch.tensor([100, 200]), SR, ["a", "b"]).validate()

    class NoGt(GainModule):
        def generate_validation_audio(self, batch):
            out = super().generate_validation_audio(batch)
            out.gt_wav = None
            return out

    cb = ValidationAudioCallback(num_lines=1, metrics=("ild",))
    with pytest.raises(ValueError, match=r"returned no gt_wav, but metric\(s\) \['ild'\]"):
        trainer(tmp_path, [cb]).fit(NoGt(), datamodule=TinyData())


def test_take_lines_cuts_a_drama_batch_but_keeps_the_vocabulary():
    from isdrama.data.dataset import DramaBatch

    b = DramaBatch(
        keys=["a", "b", "c"],
        frames=torch.tensor([3, 2, 1]),
        mask=torch.ones(3, 3, dtype=torch.bool),
        speaker_ids=torch.tensor([0, 1, 0]),
        drama_ids=torch.zeros(3),
        scene_ids=torch.zeros(3),
        texts=["x", "y", "z"],
        languages=["en"] * 3,
        pose_prompts=[None] * 3,
        words=[[]] * 3,
        word_frames=[torch.zeros(0)] * 3,
        pose=torch.zeros(3, 3, 9),
        speakers=["s0", "s1", "s2"],
    )
    cut = take_lines(b, 2)
    assert cut.keys == ["a", "b"] and cut.pose.shape == (2, 3, 9) and cut.speakers == ["s0", "s1", "s2"]
    assert len(b) == 3 and b.pose.shape[0] == 3  # the original is untouched
    assert cut.pose.untyped_storage().data_ptr() != b.pose.untyped_storage().data_ptr()  # a copy, not a view
    part = take_lines({"wav": torch.zeros(3, 2, 8), "names": ["a", "b", "c"], "sr": 16}, 1)
    assert part["wav"].shape == (1, 2, 8) and part["names"] == ["a"] and part["sr"] == 16
    assert part["wav"].untyped_storage().nbytes() == 2 * 8 * 4


def test_callbacks_config_composes_and_instantiates(tmp_path):
    from hydra import compose, initialize_config_dir

    from isdrama.training import instantiate_group

    config_dir = str(Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(version_base="1.3", config_dir=config_dir):
        cfg = compose(config_name="train", overrides=["callbacks=validation_audio", f"paths.output_dir={tmp_path}"])
    callbacks = instantiate_group(cfg.callbacks)
    names = sorted(type(c).__name__ for c in callbacks)
    assert names == ["LearningRateMonitor", "ModelCheckpoint", "ValidationAudioCallback"]
    cb = next(c for c in callbacks if isinstance(c, ValidationAudioCallback))
    assert cb.metrics == ("ipd", "ild", "ffe") and cb.spatial_cfg.mode == "corrected"
    assert cb.speech_cfg.ffe.pitch.tracker == "praat"


@pytest.mark.timeout(240)
def test_ddp_spawn_two_ranks_give_the_global_mean(tmp_path, one_torch_thread):
    """2 gloo processes scoring 3 lines unevenly (rank 0: lines 0 and 2, rank 1: line 1), logged
    with sync_dist=False: the value is the mean over all 3 lines, as one process computes it with
    spatial_errors; rank 0 alone, or a mean of the two ranks' means, would differ."""
    cb = ValidationAudioCallback(num_lines=3, metrics=("ipd", "ild"), log_audio=0, log_plots=False)
    gains = [2.0, 8.0, 1.0, 1.0, 1.0, 1.0]
    tr = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        logger=False,
        callbacks=[cb],
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=1,
    )
    tr.fit(GainModule(gains=gains, delay=3), datamodule=TinyData(batch_size=2))
    got = float(tr.callback_metrics["val_audio/ild_mae"])
    ids = torch.tensor([0, 1, 2])
    gt = torch.stack([line_audio(int(i)) for i in ids])
    direct = spatial_errors(gt, render(gt, ids, gains, delay=3), SR)  # the single-process value
    # per rank batches of 2 and 1 lines vs 3 here: float32 sums in other orders (MAE_RTOL, IPD_ATOL)
    assert got == pytest.approx(float(direct.ild.mean()), rel=MAE_RTOL)
    assert float(tr.callback_metrics["val_audio/ipd_mae"]) == pytest.approx(
        float(direct.ipd.mean()), rel=MAE_RTOL, abs=IPD_ATOL
    )
    rank0 = float(direct.ild[[0, 2]].mean())
    mean_of_means = (rank0 + float(direct.ild[1])) / 2
    assert abs(got - rank0) > 1.0 and abs(got - mean_of_means) > 1.0
