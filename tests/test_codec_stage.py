"""The codec training stage: the real configs train a tiny codec whose losses fall, its export loads
as ``codec.checkpoint`` everywhere (tokens, decode, the token cache key), and resume continues
exactly where the run stopped."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tiny_dataset
from test_configs import compose_train

from isdrama.codec import BinauralCodec, CodecConfig
from isdrama.training import run_training

#: a codec small enough for a test: STFT encoder and Vocos decoder 32 x 1
TINY = [
    "model.architecture.stft_encoder.dim=32",
    "model.architecture.stft_encoder.intermediate_dim=64",
    "model.architecture.stft_encoder.num_layers=1",
    "model.architecture.encoder.n_filters=4",
    "model.architecture.encoder.lstm=0",
    "model.architecture.vocos.dim=32",
    "model.architecture.vocos.intermediate_dim=64",
    "model.architecture.vocos.num_layers=1",
    "model.quantizer.warmup_steps=4",
    "model.quantizer.kmeans.n_iters=3",
    "model.optimizer.warmup_steps=2",
    "model.optimizer.decay_steps=200",
    "model.optimizer.lr=3.0e-3",
]


def codec_overrides(root: Path, steps: int, extra: list[str] = ()) -> list[str]:
    return [
        "experiment=codec_demo",
        "logger=csv",
        f"data.root={root}",
        "data.synth=null",
        "data.segment_seconds=0.25",
        "data.batch_size=2",
        "data.val_batch_size=2",
        "data.val_lines=2",
        "data.gain_db=0",
        "data.val_fraction=0.25",
        "data.test_fraction=0.0",
        f"trainer.max_steps={steps}",
        "trainer.max_time=null",
        "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false",
        "callbacks.codec_export.minutes=[]",
        "callbacks.validation_audio.metrics=[ipd,ild]",
        "callbacks.validation_audio.num_lines=2",
        "callbacks.validation_audio.log_audio=1",
        "callbacks.codec_export.stop_after_minutes=null",
        *TINY,
        *extra,
    ]


def train_losses(out: Path, key: str = "train/mel") -> list[float]:
    (path,) = out.glob("csv/*/metrics.csv")
    return [float(r[key]) for r in csv.DictReader(path.open()) if r.get(key)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread):
    """A tiny codec trained for 40 steps on tones (8 dramas x 3 lines)."""
    base = tmp_path_factory.mktemp("codec")
    root = write_tiny_dataset(base / "ds", n_dramas=8)
    out = base / "run"
    cfg = compose_train(codec_overrides(root, 40, ["trainer.log_every_n_steps=2"]), out)
    metrics = run_training(cfg)
    return root, out, metrics


def test_codec_stage_trains_and_losses_fall(trained):
    _, out, metrics = trained
    mel = train_losses(out)
    assert len(mel) >= 10
    assert np.mean(mel[-3:]) < 0.8 * np.mean(mel[:3]), mel
    assert (out / "codec" / "codec-last.pt").is_file()
    assert "val/mel" in metrics and np.isfinite(metrics["val/mel"])
    # the quantiser went on after its warm-up: training logged a bandwidth
    assert max(train_losses(out, "train/bandwidth")) > 0


def test_export_round_trips_through_tokens_and_matches_the_module(trained):
    root, out, _ = trained
    path = out / "codec" / "codec-last.pt"
    codec = BinauralCodec(CodecConfig(checkpoint=str(path), bandwidth=6.0))  # the file brings its architecture
    arch = codec.config.architecture
    assert arch.encoder_kind == "stft" and arch.stft_encoder.dim == 32 and arch.decoder == "vocos"
    assert codec.uninitialised_layers == []
    from isdrama.data.codec_audio import BinauralClipDataset
    from isdrama.data.mrsdrama import load_dataset

    line = load_dataset(root).lines[0]
    wav = BinauralClipDataset([line], codec.sample_rate, None).audio(0)[None]
    tokens = codec.encode(wav)
    assert tokens.shape[:3] == (1, 2, 8) and int(tokens.max()) < 1024
    decoded = codec.decode(tokens)
    assert decoded.shape == (1, 2, codec.num_frames(wav.shape[-1]) * codec.hop_length)
    # the module's validation round trip is the codec's: the same float64 code search, the same
    # decoder (what differs is the order of float32 sums in batched convolutions)
    from isdrama.lit.codec import CodecModule

    ckpt = out / "checkpoints" / "last.ckpt"
    module = CodecModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    with torch.no_grad():
        padded = torch.nn.functional.pad(wav, (0, decoded.shape[-1] - wav.shape[-1]))
        _, _, ref = module.reconstruction_losses(padded, 6.0, train=False)
    assert torch.allclose(ref, decoded, atol=1e-4 * float(decoded.abs().max()) + 1e-6)


def test_new_checkpoint_changes_the_token_cache_key(trained, tmp_path):
    _, out, _ = trained
    first = BinauralCodec(CodecConfig(checkpoint=str(out / "codec" / "codec-last.pt")))
    state = torch.load(out / "codec" / "codec-last.pt", map_location="cpu", weights_only=True)
    state["state_dict"]["decoder.head.out.bias"] = state["state_dict"]["decoder.head.out.bias"] + 1e-3
    torch.save(state, tmp_path / "other.pt")
    second = BinauralCodec(CodecConfig(checkpoint=str(tmp_path / "other.pt")))
    assert first.config_key() != second.config_key()  # a decoder-only change re-keys the cache too


def test_architecture_mismatch_and_bandwidth_errors(trained):
    _, out, _ = trained
    path = str(out / "codec" / "codec-last.pt")
    with pytest.raises(ValueError, match="needs 16 codebooks but this codec has 8"):
        BinauralCodec(CodecConfig(checkpoint=path, bandwidth=12.0))
    other = BinauralCodec(CodecConfig(checkpoint=path)).config.architecture.to_dict()
    other["stft_encoder"]["dim"] = 48
    with pytest.raises(ValueError, match="the checkpoint holds codec architecture"):
        BinauralCodec(CodecConfig(checkpoint=path, architecture=other))


def test_resume_continues_to_the_same_weights(tmp_path, one_torch_thread):
    """Two epochs straight == one epoch, stop, resume from its checkpoint for the second (the
    quantiser turns on at step 4, so the resumed epoch runs EMA codebooks, dead-code replacement
    and quantiser dropout)."""
    from hydra.utils import instantiate

    root = write_tiny_dataset(tmp_path / "ds", n_dramas=8)
    extra = ["data.batch_size=3"]
    probe = compose_train(codec_overrides(root, 1, extra), tmp_path / "probe")
    dm = instantiate(probe.data, codec=probe.codec, _recursive_=False)
    dm.setup()
    epoch = len(dm.datasets["train"]) // 3
    assert epoch > 4
    straight = tmp_path / "straight"
    run_training(compose_train(codec_overrides(root, 2 * epoch, extra), straight))
    part = tmp_path / "part"
    run_training(compose_train(codec_overrides(root, -1, [*extra, "trainer.max_epochs=1"]), part))
    resumed = tmp_path / "resumed"
    ckpt = part / "checkpoints" / "last.ckpt"
    run_training(compose_train(codec_overrides(root, 2 * epoch, [*extra, f"ckpt_path={ckpt}"]), resumed))
    a = torch.load(straight / "codec" / "codec-last.pt", weights_only=True)
    b = torch.load(resumed / "codec" / "codec-last.pt", weights_only=True)
    assert a["extra"]["step"] == b["extra"]["step"] == 2 * epoch
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name


def _module_cfg(tmp_path, overrides):
    return compose_train(["experiment=codec_demo", *overrides], tmp_path).model


def test_pretrained_starting_points_load_from_local_files(tmp_path, one_torch_thread):
    """The online starting points, from files made here: EnCodec's published-architecture state
    dict (encoder + RVQ) and a Vocos checkpoint (backbone + head; its feature extractor is ignored)."""
    from hydra.utils import instantiate

    from isdrama.codec.architecture import VocosConfig
    from isdrama.codec.vocos_decoder import VocosDecoder, load_pretrained_vocos
    from isdrama.codec.weights import build_encodec

    published = build_encodec(CodecConfig().spec, seed=7)
    with torch.no_grad():
        for layer in published.quantizer.vq.layers:  # make the codebooks recognisable
            layer._codebook.embed.normal_()
    torch.save(published.state_dict(), tmp_path / "encodec_state.pt")
    cfg = _module_cfg(
        tmp_path,
        [
            "model/codec_architecture@model.architecture=encodec",
            "model.architecture.vocos.dim=32",
            "model.architecture.vocos.intermediate_dim=64",
            "model.architecture.vocos.num_layers=1",
            f"model.init.encodec_pretrained={tmp_path / 'encodec_state.pt'}",
        ],
    )
    module = instantiate(cfg, _recursive_=False)
    mine = module.model.state_dict()
    for name, value in published.state_dict().items():
        if name.startswith("encoder.") or name.startswith("quantizer.vq.layers.0."):
            assert torch.equal(mine[name], value), name
    assert bool(module.quantizer_on)  # pretrained codebooks: no warm-up, no k-means

    vocos_cfg = VocosConfig(
        dim=32, intermediate_dim=64, num_layers=1, n_fft=1280, bandwidth_embeddings=4, bandwidth_id=2
    )
    source = VocosDecoder(128, 320, vocos_cfg)
    state = {**source.state_dict(), "feature_extractor.encodec.encoder.x": torch.zeros(1)}
    (tmp_path / "vocos").mkdir()
    torch.save(state, tmp_path / "vocos" / "pytorch_model.bin")
    target = VocosDecoder(128, 320, vocos_cfg)
    assert "vocos:" in load_pretrained_vocos(target, str(tmp_path / "vocos"))
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value), name
    wrong = VocosDecoder(128, 320, VocosConfig(dim=48, intermediate_dim=64, num_layers=1, n_fft=1280))
    with pytest.raises(ValueError, match="do not fit codec.architecture.vocos"):
        load_pretrained_vocos(wrong, str(tmp_path / "vocos"))
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        load_pretrained_vocos(target, str(tmp_path / "nowhere"))


def test_seanet_encoder_with_the_adversarial_option_steps_both_optimisers(tmp_path, one_torch_thread):
    """EnCodec's SEANet encoder (the other encoder_kind) and Vocos' discriminators."""
    root = write_tiny_dataset(tmp_path / "ds", n_dramas=8)
    out = tmp_path / "run"
    extra = [
        "model.architecture.encoder_kind=seanet",
        "model.losses.adversarial.enabled=true",
        "model.losses.adversarial.period_discriminator=false",
        "trainer.log_every_n_steps=1",
        "trainer.check_val_every_n_epoch=100",
    ]
    # Lightning counts every optimiser's step in global_step: max_steps=6 = 3 generator steps
    run_training(compose_train(codec_overrides(root, 6, extra), out))
    disc = train_losses(out, "train/discriminator")
    adv = train_losses(out, "train/adversarial")
    assert len(disc) == 3 and all(np.isfinite(disc)) and all(np.isfinite(adv))
    codec = BinauralCodec(CodecConfig(checkpoint=str(out / "codec" / "codec-last.pt")))
    assert codec.config.architecture.encoder_kind == "seanet"
    wav = 0.05 * torch.randn(1, 2, 4000, generator=torch.Generator().manual_seed(0))
    assert codec.decode(codec.encode(wav)).shape == (1, 2, codec.num_frames(4000) * codec.hop_length)


def test_online_codec_experiment_composes_and_fails_clearly_offline(tmp_path, monkeypatch):
    """experiment=codec: EnCodec's published widths + Vocos' EnCodec decoder size, pretrained
    starting points; offline, building it says where the weights were looked for."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = compose_train(["experiment=codec"], tmp_path)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert model["architecture"]["encoder"] == {
        "n_filters": 32,
        "n_residual_layers": 1,
        "lstm": 2,
        "ratios": [8, 5, 4, 2],
    }
    assert model["architecture"]["vocos"]["dim"] == 384 and model["losses"]["adversarial"]["enabled"]
    assert cfg.trainer.use_distributed_sampler and cfg.trainer.gradient_clip_val is None
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match=r"offline \(HF_HUB_OFFLINE=1\) and .*encodec_24khz"):
        instantiate(cfg.model, _recursive_=False)


def test_trained_codec_fills_the_token_cache_and_a_new_one_re_encodes(trained, tmp_path):
    """codec.checkpoint=PATH through the data pipeline (what `isdrama-data tokenize
    --codec-checkpoint` and every stage's data module use): the cache is keyed by the trained
    codec, its tokens are that codec's, and another checkpoint gets its own entries."""
    from isdrama.data.mrsdrama import load_dataset
    from isdrama.data.tokenization import open_token_cache

    root, out, _ = trained
    lines = load_dataset(root).lines[:3]
    first = out / "codec" / "codec-last.pt"
    cache = open_token_cache(
        root, {"model": "encodec_24khz", "bandwidth": 6.0, "checkpoint": str(first)}, progress=False
    )
    cache.tokenize(lines, progress=False)
    codec = BinauralCodec(CodecConfig(checkpoint=str(first)))
    assert cache.codec.config_key() == codec.config_key()
    from isdrama.data.codec_audio import BinauralClipDataset

    wav = BinauralClipDataset(lines[:1], codec.sample_rate, None).audio(0)[None]
    assert np.array_equal(cache.load(lines[0]), codec.encode(wav)[0].numpy())
    state = torch.load(first, map_location="cpu", weights_only=True)
    for name in list(state["state_dict"]):
        if name.endswith("_codebook.embed"):
            state["state_dict"][name] = state["state_dict"][name].flip(0)  # other codes
    torch.save(state, tmp_path / "second.pt")
    other = open_token_cache(
        root, {"model": "encodec_24khz", "bandwidth": 6.0, "checkpoint": str(tmp_path / "second.pt")}, progress=False
    )
    assert other.codec.config_key() != cache.codec.config_key()
    assert not other.has(lines[0])  # a new codec: its tokens are not there until tokenised
    other.tokenize(lines[:1], progress=False)
    assert not np.array_equal(other.load(lines[0]), cache.load(lines[0]))
    assert not codec.causal  # the STFT encoder sees the future: the cache batches equal lengths only


def test_codec_batches_collate_and_cut_for_the_validation_callback():
    from isdrama.callbacks.generation import batch_size_of, take_lines
    from isdrama.data.codec_audio import collate_clips

    items = [{"wav": torch.ones(2, n), "length": n, "name": f"l{n}", "text": "t", "language": "en"} for n in (5, 3, 4)]
    batch = collate_clips(items)
    assert batch.wav.shape == (3, 2, 5) and batch.lengths.tolist() == [5, 3, 4]
    assert float(batch.wav[1, :, 3:].abs().sum()) == 0.0  # zero-padded after the length
    cut = take_lines(batch, 2)
    assert batch_size_of(cut) == 2 and cut.names == ["l5", "l3"] and cut.wav.shape == (2, 2, 5)
    assert len(batch) == 3  # the original is untouched
