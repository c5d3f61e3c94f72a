"""Inference end to end with a tiny drama model trained here on the real configs: every pose mode
of a script, determinism, the manifest, infer.py / isdrama-infer, the packed checkpoints, batch
mode read by isdrama-eval, the cascade baseline and the results table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from omegaconf import OmegaConf
from test_configs import compose_train
from test_drama_stage import drama_overrides

from isdrama.training import run_training


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_torch_thread):
    """(dataset root, drama export, codec checkpoint) of a drama_demo run of a few steps."""
    from conftest import write_tiny_dataset

    from isdrama.data.tokenization import open_token_cache

    root = write_tiny_dataset(tmp_path_factory.mktemp("infer") / "ds", n_dramas=6, with_video=True)
    out = tmp_path_factory.mktemp("infer_run")
    cfg = compose_train(drama_overrides(root, 6, validation_audio=False), out)
    run_training(cfg)
    codec = open_token_cache(root, OmegaConf.to_container(cfg.codec, resolve=True), progress=False).codec
    codec_path = codec.save(out / "codec.pt")
    return root, out / "drama" / "drama-last.pt", codec_path


@pytest.fixture(scope="module")
def generator(tiny):
    from isdrama.inference.generator import DramaGenerator, default_settings

    _, export, codec = tiny
    return DramaGenerator.from_checkpoint(export, codec=codec, settings=default_settings(steps=3))


def script_file(folder: Path, root: Path) -> Path:
    """A hand-written 2-speaker script with every pose mode; prompts and the video from the dataset."""
    wavs = sorted(root.glob("room1/*/wav/*.wav"))
    video = sorted(root.glob("room1/*/*.mp4"))[0]
    pose = sorted(root.glob("room1/*/geometric_pose/*.npy"))[0]
    sf.write(folder / "mono_prompt.wav", sf.read(wavs[0])[0].mean(axis=1), 48000)  # mono prompt
    data = {
        "speakers": [
            {"name": "a", "prompt": "mono_prompt.wav", "language": "en"},
            {"name": "b", "prompt": str(wavs[1]), "language": "en"},
        ],
        "lines": [
            {"speaker": "a", "text": "hello world", "trajectory": {"waypoints": [{"azimuth": -80, "distance": 2}]}},
            {
                "speaker": "b",
                "text": "over here",
                "pause": 0.2,
                "trajectory": {"waypoints": [{"t": 0, "x": 2, "y": 1}, {"t": 0.8, "x": -2, "y": 1}]},
            },
            {"speaker": "a", "text": "again", "pose_file": str(pose)},
            {"speaker": "b", "text": "to the left", "pose_text": "[STATIC] sits to the left", "duration": 0.5},
            {"speaker": "a", "text": "watch", "video": {"path": str(video), "start": 0.1, "end": 0.7}},
        ],
    }
    path = folder / "script.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_pose_mode_generates_a_drama_with_a_truthful_manifest(generator, tiny, tmp_path):
    from isdrama.inference.script import load_script

    root, export, codec = tiny
    script = load_script(script_file(tmp_path, root))
    drama = generator.generate(script, progress=False)
    sr = drama.sample_rate
    assert sr == 48000 and drama.wav.shape[0] == 2 and np.isfinite(drama.wav).all()
    recs = drama.manifest["lines"]
    assert [r["pose_branch"] for r in recs] == ["geo", "geo", "geo", "text", "video"]
    assert [r["frames_from"] for r in recs] == ["predicted", "trajectory span", "pose file", "duration", "video span"]
    fr = generator.frame_rate
    assert recs[1]["frames"] == round(0.8 * fr) and recs[3]["frames"] == round(0.5 * fr)
    assert recs[4]["frames"] == round(0.6 * fr)
    # timings: each line starts after its pause; the drama is lines + pauses long
    t = 0.0
    for line, rec, wav in zip(script.lines, recs, drama.line_wavs):
        t += line.pause
        assert rec["start"] == pytest.approx(t, abs=1e-5)
        assert rec["end"] - rec["start"] == pytest.approx(wav.shape[1] / sr, abs=1e-5)
        assert wav.shape[1] == round(rec["frames"] * codec_hop_seconds(generator) * sr)
        t = rec["end"]
    assert drama.wav.shape[1] == round(t * sr)
    assert [r["seed"] for r in recs] == [0, 1, 2, 3, 4]
    m = drama.manifest
    # drama_demo drops content and pose with the prompt: the unconditional branch has none, g_c = g
    assert m["guidance"] == {
        "steps": 3,
        "scale": 3.0,
        "alpha": 0.4,
        "drops_content": True,
        "drops_pose": True,
        "content_scale": None,
    }
    assert m["model"]["model_sha1"] and m["model"]["codec_sha1"] and m["model"]["codec_config_key"]
    assert np.abs(drama.wav).max() <= 0.99 + 1e-6
    paths = drama.save(tmp_path / "out")
    saved = json.loads(paths["manifest"].read_text())
    assert saved["lines"] == recs
    wav, file_sr = sf.read(paths["drama"])
    assert file_sr == 48000 and wav.shape == (drama.wav.shape[1], 2)
    assert all((tmp_path / "out" / r["wav"]).is_file() for r in recs)


def codec_hop_seconds(generator) -> float:
    return generator.codec.hop_length / generator.codec.sample_rate


def test_generation_is_deterministic_per_seed_and_uses_the_previous_line(generator, tiny, tmp_path):
    from isdrama.inference.script import load_script

    root, _, _ = tiny
    script = load_script(script_file(tmp_path, root))
    a = generator.generate(script, progress=False)
    b = generator.generate(script, progress=False)
    assert np.array_equal(a.wav, b.wav)
    line = script.lines[0]
    prompt = generator.encode_prompt_file(script.speakers["a"].prompt)
    pose = generator.pose_input(line, 20)
    one = generator.generate_line(line.text, pose, prompt, frames=20, seed=5)
    same = generator.generate_line(line.text, pose, prompt, frames=20, seed=5)
    other = generator.generate_line(line.text, pose, prompt, frames=20, seed=6)
    ctx = generator.generate_line(line.text, pose, prompt, frames=20, seed=5, previous=other.normalized)
    assert np.array_equal(one.wav, same.wav) and not np.array_equal(one.wav, other.wav)
    assert not torch.equal(one.latents, ctx.latents)  # the context prompt enters the guidance
    # drama_demo's model drops the content in its unconditional branch: g_c = g by default (the
    # model's model.flow.content_guidance_scale is null), another g_c adds the v(x | content) branch
    from isdrama.inference.generator import DramaGenerator, default_settings

    assert generator.module.uncond_drops_content and generator.guidance.content_scale is None
    _, export, codec = tiny
    two = DramaGenerator.from_checkpoint(
        export, codec=codec, settings=default_settings(steps=3, content_guidance_scale=2.0)
    )
    assert two.guidance.content_scale == 2.0
    words = two.generate_line(line.text, pose, prompt, frames=20, seed=5)
    assert not torch.equal(words.latents, one.latents)
    g_is_gc = DramaGenerator.from_checkpoint(
        export, codec=codec, settings=default_settings(steps=3, content_guidance_scale=3.0)
    ).generate_line(line.text, pose, prompt, frames=20, seed=5)
    assert torch.equal(g_is_gc.latents, one.latents)  # g_c = g: the same two branches


def test_a_prompt_is_resampled_and_cropped_and_bad_prompts_are_refused(generator):
    sr = 16000
    x = 0.1 * np.sin(2 * np.pi * 200 * np.arange(10 * sr) / sr).astype(np.float32)
    lat = generator.encode_prompt(x, sr)
    assert lat.shape == (generator.prompt_max_frames, generator.codec.latent_dim)
    with pytest.raises(ValueError, match="non-empty and finite"):
        generator.encode_prompt(np.full(100, np.nan, np.float32), sr)
    with pytest.raises(ValueError, match="mono"):
        generator.encode_prompt(np.zeros((3, 100), np.float32), sr)


def test_infer_py_and_isdrama_infer_write_the_same_drama(tiny, tmp_path):
    from isdrama.inference.cli import main as cli_main
    from isdrama.inference.run import run_infer
    from isdrama.utils.config import CONFIG_DIR

    root, export, codec = tiny
    script = script_file(tmp_path, root)
    args = ["--checkpoint", str(export), "--codec", str(codec), "--steps", "2", "--quiet"]
    assert cli_main([str(script), "--out", str(tmp_path / "cli"), *args]) == 0
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(
            config_name="infer",
            overrides=[
                f"script={script}",
                f"checkpoint={export}",
                f"codec_checkpoint={codec}",
                f"out={tmp_path / 'hydra'}",
                "generation.steps=2",
                "progress=false",
            ],
        )
    assert run_infer(cfg) == 0
    a, _ = sf.read(tmp_path / "cli" / "drama.wav")
    b, _ = sf.read(tmp_path / "hydra" / "drama.wav")
    assert np.array_equal(a, b)


def test_packed_half_precision_checkpoints_generate_nearly_the_same(tiny, generator, tmp_path):
    from isdrama.inference.checkpoints import pack_inference_checkpoints
    from isdrama.inference.generator import DramaGenerator
    from isdrama.inference.poses import PoseInput

    _, export, codec = tiny
    paths = pack_inference_checkpoints(export, codec, tmp_path / "demo")
    half = DramaGenerator.from_checkpoint(paths["drama"], settings=generator.settings)  # finds codec.pt beside it
    assert half.identity["codec"] == str(tmp_path / "demo" / "codec.pt")
    sd = torch.load(paths["drama"], weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in sd.values() if isinstance(v, torch.Tensor) and v.is_floating_point())
    pose = PoseInput("geo", pose=torch.tensor([[-2.0, 1, 0, 1, 0, 0, 0, 0, 0]]).repeat(15, 1))
    a = generator.generate_line("hello", pose, None, frames=15, seed=1).latents
    b = half.generate_line("hello", pose, None, frames=15, seed=1).latents
    # fp16 storage rounds each weight by <= 2^-11 relative: the latents move by a few per mille
    assert float((a - b).norm() / a.norm()) < 0.05


def test_batch_mode_writes_what_isdrama_eval_reads_and_the_table_has_every_system(generator, tiny, tmp_path):
    from isdrama.inference.table import results_table
    from isdrama.metrics.cli import main as eval_main

    root, _, _ = tiny
    path = results_table(
        root,
        tmp_path / "table",
        ["geo", "text", "video", "cascade"],
        generator,
        split="val",
        metrics=["ipd", "ild"],
        progress=False,
    )
    for mode in ("geo", "text", "video", "cascade"):
        folder = tmp_path / "table" / mode
        names = sorted(p.name for p in (folder / "infer").glob("*.wav"))
        assert names and names == sorted(p.name for p in (folder / "gt").glob("*.wav"))
        for n in names:  # same length as the recording
            assert sf.info(folder / "infer" / n).frames == sf.info(folder / "gt" / n).frames
        texts = json.loads((folder / "texts.json").read_text())
        assert set(texts) == {n[:-4] for n in names}
        agg = json.loads((folder / "eval" / "results.json").read_text())["aggregate"]
        assert np.isfinite(agg["ipd_mae"]["mean"]) and np.isfinite(agg["ild_mae"]["mean"])
    table = path.read_text()
    for label in ("Spatialization", "geometric pose", "video pose", "text pose"):
        assert label in table
    # the tiny dataset: spk0 sits at x = -2, spk1 at x = +2, the cascade renders exactly there
    summary = json.loads((tmp_path / "table" / "table.json").read_text())
    assert summary["cascade"]["ild_sign_matches_pose"] == 1.0 and summary["cascade"]["lateral_lines"] > 0
    assert "100.0 % of" in table
    # the folder is exactly isdrama-eval's input
    f = tmp_path / "table" / "geo"
    argv = [str(f / "gt"), str(f / "infer"), "--prompt-dir", str(f / "prompt"), "--texts", str(f / "texts.json")]
    assert eval_main([*argv, "--metrics", "ild", "--out", str(tmp_path / "again"), "--quiet"]) == 0


def test_the_cascade_baseline_puts_a_left_line_on_the_left(tiny, tmp_path):
    from isdrama.data.mrsdrama import load_dataset
    from isdrama.data.synth.generator import SynthConfig
    from isdrama.data.synth.hrtf import cached_hrtf
    from isdrama.inference.batch import cascade_line
    from isdrama.metrics.interaural import broadband_ild_db

    root, _, _ = tiny
    hrtf = cached_hrtf(SynthConfig().hrtf)
    for line in load_dataset(root).lines[:2]:  # spk0 sits at x = -2, spk1 at x = +2
        wav = cascade_line(line, hrtf)
        assert wav.shape == (2, sf.info(line.wav_path).frames)
        ild = broadband_ild_db(wav)
        assert (ild > 3.0) if line.speaker == "spk0" else (ild < -3.0), (line.speaker, ild)


def test_the_drama_is_muxed_onto_the_input_video(generator, tiny, tmp_path):
    import subprocess

    from isdrama.inference.mux import ffmpeg_binary
    from isdrama.inference.script import load_script

    root, _, _ = tiny
    script = load_script(script_file(tmp_path, root))
    video = sorted(root.glob("room1/*/*.mp4"))[0]
    drama = generator.generate(script, progress=False)
    paths = drama.save(tmp_path / "out", video=video)
    probe = subprocess.run([ffmpeg_binary(), "-i", str(paths["video"])], capture_output=True, text=True).stderr
    assert "Video:" in probe and "Audio: aac" in probe, probe
    assert json.loads(paths["manifest"].read_text())["video"]["output"] == "drama.mp4"
    with pytest.raises(FileNotFoundError, match="not found"):
        drama.save(tmp_path / "out2", video=tmp_path / "nope.mp4")


def test_the_committed_demo_checkpoints_load_and_speak_where_the_pose_says():
    """checkpoints/demo (make demo's model) must keep loading with this code; a line on the left is
    louder on the left (the demo model's spatial control, the acceptance's check in small)."""
    from isdrama.data.cache import hash_file
    from isdrama.inference.generator import DramaGenerator, default_settings
    from isdrama.inference.poses import PoseInput
    from isdrama.metrics.interaural import broadband_ild_db

    folder = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"
    pack = json.loads((folder / "pack.json").read_text())
    for name, info in pack["files"].items():
        assert hash_file(folder / name) == info["sha1"], name
    gen = DramaGenerator.from_checkpoint(folder / "drama.pt", settings=default_settings(steps=8))
    assert set(gen.net.frontend.branches) == {"geo", "video", "text"}
    frames = 150
    ilds = {}
    for side, x in (("left", -2.0), ("right", 2.0)):
        pose = PoseInput("geo", pose=torch.tensor([[x, 1.0, 0.3, 1, 0, 0, 0, 0, 0]]).repeat(frames, 1))
        wav = gen.generate_line("Has anyone seen my green umbrella?", pose, None, frames=frames, seed=0).wav
        assert np.isfinite(wav).all() and np.abs(wav).max() > 1e-3
        ilds[side] = broadband_ild_db(wav)
    assert ilds["left"] > 1.0 and ilds["right"] < -1.0, ilds


def test_a_packed_codec_drops_the_ema_sums_and_decodes_exactly_as_the_original(tiny, tmp_path):
    from isdrama.codec import BinauralCodec
    from isdrama.inference.checkpoints import pack_inference_checkpoints

    _, export, codec_path = tiny
    paths = pack_inference_checkpoints(export, codec_path, tmp_path / "fp32", half=False)
    stored = torch.load(paths["codec"], weights_only=True)["state_dict"]
    assert not any(k.endswith("embed_avg") for k in stored) and any(k.endswith("_codebook.embed") for k in stored)
    original, packed = BinauralCodec.load(codec_path), BinauralCodec.load(paths["codec"])
    tokens = torch.randint(0, original.codebook_size, (1, 2, original.n_q, 12))
    assert torch.equal(original.decode(tokens), packed.decode(tokens))
    sd = packed.model.state_dict()
    key = next(k for k in sd if k.endswith("embed_avg"))
    base = key[: -len("embed_avg")]
    assert torch.equal(sd[key], sd[base + "embed"] * sd[base + "cluster_size"][:, None])
    assert paths["drama"].stat().st_size < export.stat().st_size  # EMA weights only, no optimiser


def test_an_export_of_a_pretrained_front_end_loads_without_the_pose_checkpoint(tmp_path):
    """The export describes the front end by its own config and vocabulary, so it loads on a machine
    that never had the pose-pretrain file (a user's, CI's: checkpoints/demo)."""
    import pytorch_lightning as pl
    from drama_configs import drama_model
    from model_configs import pose_pretrain_kwargs

    from isdrama.lit.drama import DramaModule
    from isdrama.lit.pose_pretrain import PosePretrainModule

    torch.manual_seed(0)
    kwargs = pose_pretrain_kwargs()
    kwargs["content"]["d_model"] = 48  # unlike drama_demo's content config: the checkpoint's must win
    kwargs["pose_encoder"]["content_dim"] = 48
    pose = PosePretrainModule(**kwargs)
    path = tmp_path / "pose.ckpt"
    meta = {"hyper_parameters": dict(pose.hparams), "pytorch-lightning_version": pl.__version__}
    torch.save({"state_dict": pose.state_dict(), **meta}, path)
    values = drama_model("drama_demo")
    values.pop("_target_")
    values["frontend"] = {"checkpoint": str(path), "freeze": False}
    module = DramaModule(**values)
    assert module.net.frontend.config.content.d_model == 48
    export = module.export(tmp_path / "drama.pt")
    path.unlink()
    loaded = DramaModule.from_export(export)
    assert loaded.hparams["frontend"]["checkpoint"] is None
    assert loaded.net.frontend.config.content.d_model == 48
    assert loaded.net.frontend.content.vocab == module.net.frontend.content.vocab
    for name, value in module.ema_net.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, loaded.net.state_dict()[name]), name


def test_an_export_written_before_the_content_prior_and_position_features_loads_as_it_was_built(tmp_path):
    """Exports from before ``model.content_position``, ``model.transformer.prior``,
    ``model.prompt.content_drop`` and ``model.transformer.attention.window`` (their hyper-parameters
    lack them, e.g. the demo model of sessions 7-10) build without any (full self-attention)."""
    from drama_configs import drama_model

    from isdrama.lit.drama import DramaModule

    torch.manual_seed(0)
    values = drama_model("drama_demo")
    values.pop("_target_")
    values["content_position"] = False
    values["transformer"]["prior"]["enabled"] = False
    module = DramaModule(**values)
    export = module.export(tmp_path / "drama.pt")
    payload = torch.load(export, weights_only=True)
    hp = payload["hyper_parameters"]
    del hp["content_position"], hp["transformer"]["prior"], hp["losses"]["prior"], hp["prompt"]["content_drop"]
    del hp["transformer"]["attention"]["window"]
    torch.save(payload, export)
    loaded = DramaModule.from_export(export)
    assert loaded.net.transformer.prior is None and not loaded.content_position
    assert all(block.self_attn.window is None for block in loaded.net.transformer.blocks)  # full, as trained
    assert module.net.transformer.blocks[0].self_attn.window == 1200  # the tiny preset's
    assert not loaded.uncond_drops_content  # guidance's unconditional branch as it was trained: the paper's
    assert loaded.net.transformer.in_content.in_features == loaded.net.frontend.config.content.d_model
    for name, value in module.ema_net.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, loaded.net.state_dict()[name]), name
