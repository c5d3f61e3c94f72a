"""The real Hydra config tree composes for every group option and builds a working data module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_tiny_dataset
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def compose_train(overrides: list[str], output_dir: Path):
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.log_dir = str(output_dir / "logs")
            del cfg.hydra
        return cfg


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["trainer=gpu"],
        ["trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2"],
        ["trainer=ddp_cpu"],
        ["trainer=fsdp"],
        ["logger=csv"],
        ["logger=none"],
        ["data=mrsdrama"],
        ["codec=encodec_48khz"],
        ["debug=fast"],
    ],
)
def test_train_config_composes_and_resolves(overrides, tmp_path):
    cfg = compose_train(overrides, tmp_path)
    container = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert container["data"]["items"]["frame_rate"] == 75.0
    assert container["trainer"]["use_distributed_sampler"] is False
    if "data=mrsdrama" in overrides:
        assert container["data"]["train"]["max_frames"] == 12000 and container["data"]["synth"] is None


def test_trainer_presets_instantiate_on_cpu(tmp_path):
    cfg = compose_train(["trainer=cpu", "trainer.max_epochs=1"], tmp_path)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_epochs == 1 and trainer.num_devices == 1


def test_data_config_builds_token_batches(tmp_path):
    """data + codec groups -> DramaDataModule with real (k-means-initialised) EnCodec tokens."""
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=4, lines_per_drama=2)
    cfg = compose_train(
        [
            f"data.root={root}",
            "data.synth=null",
            "codec.pretrained=false",
            "codec.bandwidth=1.5",
            "codec.kmeans.seconds=3",
            "codec.kmeans.n_iters=5",
            "data.val_fraction=0.25",
            "data.test_fraction=0.25",
        ],
        tmp_path,
    )
    dm = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    B, T = batch.mask.shape
    assert batch.tokens.shape == (B, 2, 2, T) and batch.tokens.dtype == torch.long
    assert batch.tokens.max() > 0  # k-means codebooks: tokens are not all zero
    assert batch.content_ids is not None and (batch.content_frames.sum(1) == batch.frames).all()
    assert batch.pose.shape == (B, T, 9)
    cached = list((root / ".isdrama_cache" / "tokens").rglob("*.npy"))
    assert len(cached) == 8


def test_missing_dataset_message(tmp_path):
    cfg = compose_train([f"data.root={tmp_path / 'none'}", "data.synth=null", "data.items.load_tokens=false"], tmp_path)
    dm = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    with pytest.raises(FileNotFoundError, match="no dramas found.*isdrama-data synth"):
        dm.prepare_data()
