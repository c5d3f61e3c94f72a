"""The drama stage through the real configs: `experiment=drama_demo` trains on a tiny tokenised
dataset with falling losses, validation generates scored audio, resume from a checkpoint taken
mid-epoch continues to the same losses and weights, and the configs compose for every preset."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_dataset
from test_configs import compose_train

from isdrama.models.pose_encoder import sample_pose_branches, select_pose_branches
from isdrama.training import run_training

#: a transformer small enough for a test (the tiny preset's structure, narrower)
SMALL = [
    "model.transformer.d_model=32",
    "model.transformer.n_heads=2",
    "model.transformer.moe.ff_dim=32",
    "model.transformer.moe.router_heads=2",
    "model.optimizer.warmup_steps=2",
    "model.optimizer.lr=3.0e-3",
    "model.ema.update_after_step=0",
    "model.statistics.max_batches=4",
    "model.flow.steps=4",
]


def drama_overrides(root: Path, steps: int, extra: list[str] = (), validation_audio: bool = True) -> list[str]:
    audio = [
        "callbacks.validation_audio.metrics=[ipd,ild]",
        "callbacks.validation_audio.num_lines=2",
        "callbacks.validation_audio.log_audio=1",
    ]
    return [
        "experiment=drama_demo",
        "logger=csv",
        f"data.root={root}",
        "data.synth=null",
        "data.val_fraction=0.25",
        "data.test_fraction=0.0",
        "data.train.max_frames=300",
        "data.val.max_frames=300",
        "codec.pretrained=false",
        "codec.kmeans.n_iters=2",
        f"trainer.max_steps={steps}",
        "trainer.max_time=null",
        "trainer.check_val_every_n_epoch=1",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        *(audio if validation_audio else ["callbacks.validation_audio=null"]),
        *SMALL,
        *extra,
    ]


def logged(out: Path, key: str) -> list[tuple[int, float]]:
    (path,) = out.glob("csv/*/metrics.csv")
    return [(int(r["step"]), float(r[key])) for r in csv.DictReader(path.open()) if r.get(key)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # with videos: drama_demo trains all three pose branches (geo, video, text)
    return write_tiny_dataset(tmp_path_factory.mktemp("drama") / "ds", n_dramas=8, with_video=True)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("drama_run")
    metrics = run_training(compose_train(drama_overrides(dataset, 30), out))
    return out, metrics


def test_drama_stage_trains_validates_and_its_losses_fall(trained):
    out, metrics = trained
    flow = [v for _, v in logged(out, "train/flow")]
    assert len(flow) >= 25
    assert sum(flow[-5:]) / 5 < 0.8 * sum(flow[:5]) / 5, flow
    for key in ("train/pitch", "train/balance", "train/duration", "train/prior", "val/flow", "val_audio/ild_mae"):
        assert logged(out, key), key
    prior = [v for _, v in logged(out, "train/prior")]
    assert sum(prior[-5:]) / 5 < 0.8 * sum(prior[:5]) / 5, prior
    assert any(k.startswith("val/routing/b0_spatial_usage") for k in metrics)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    sd = ckpt["state_dict"]
    assert any(k.startswith("ema.ema_model.flow.estimator.") for k in sd)
    assert not any(k.startswith("_codec") for k in sd)  # the codec stays outside the checkpoint
    assert "routing_temperature" in sd and float(sd["routing_temperature"]) < 2.0
    assert bool(sd["net.flow.statistics_fitted"])


def test_export_holds_the_ema_weights_and_loads_for_inference(trained):
    from isdrama.lit.drama import DramaModule

    out, _ = trained
    module = DramaModule.from_export(out / "drama" / "drama-last.pt")
    sd = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    ema = {k[len("ema.ema_model.") :]: v for k, v in sd.items() if k.startswith("ema.ema_model.")}
    for name, value in module.net.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, ema[name]), name
    with pytest.raises(ValueError, match="not a drama-stage export"):
        DramaModule.from_export(out / "checkpoints" / "last.ckpt")


def test_resume_from_a_mid_epoch_checkpoint_gives_the_same_losses_and_weights(dataset, tmp_path, one_torch_thread):
    every = [
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "+callbacks.model_checkpoint.save_top_k=-1",
        "callbacks.model_checkpoint.filename='step_{step:03d}'",
    ]
    straight = tmp_path / "straight"
    run_training(compose_train(drama_overrides(dataset, 14, every, validation_audio=False), straight))
    mid, ckpt = None, None
    for path in sorted((straight / "checkpoints").glob("step_*.ckpt")):  # the first one inside epoch 1
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        done = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["ready"]
        if ckpt["epoch"] == 1 and done > 0:
            mid = path
            break
    assert mid is not None, "no mid-epoch checkpoint"
    step = ckpt["global_step"]
    resumed = tmp_path / "resumed"
    run_training(compose_train(drama_overrides(dataset, 14, [*every, f"ckpt_path={mid}"], False), resumed))
    a, b = dict(logged(straight, "train/total")), dict(logged(resumed, "train/total"))
    later = sorted(s for s in b if s > step)
    assert later and all(a[s] == b[s] for s in later), [(s, a[s], b[s]) for s in later]
    wa = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    wb = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys()
    for k in wa:  # model, EMA, statistics, routing temperature (the vocabulary is extra state)
        assert torch.equal(wa[k], wb[k]) if isinstance(wa[k], torch.Tensor) else wa[k] == wb[k], k


@pytest.mark.parametrize(
    "experiment",
    [
        "drama",
        "drama_demo",
        "ablation/no_mamba",
        "ablation/no_moe",
        "ablation/no_prosodic_moe",
        "ablation/no_spatial_moe",
        "ablation/linear_experts",
        "ablation/no_f0",
        "ablation/no_cfg",
    ],
)
def test_drama_experiments_compose(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    assert cfg.model._target_ == "isdrama.lit.drama.DramaModule"
    assert cfg.model.transformer.d_model in (128, 768)
    if experiment == "drama":
        assert cfg.trainer.precision == "bf16-mixed" and cfg.data.train.max_frames == 12000
        assert cfg.model.optimizer.lr == 5.0e-5 and cfg.model.optimizer.warmup_steps == 10000


def test_drama_stage_without_tokens_fails_clearly(dataset, tmp_path):
    from isdrama.lit.drama import DramaModule

    cfg = compose_train(drama_overrides(dataset, 1, SMALL), tmp_path)
    from hydra.utils import instantiate

    module: DramaModule = instantiate(cfg.model, _recursive_=False)
    with pytest.raises(RuntimeError, match="no codec"):
        module.codec


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_the_drama_stage(dataset, tmp_path):
    """The distributed config path (trainer=ddp_cpu: gloo, 2 processes) on the real configs."""
    out = tmp_path / "ddp"
    run_training(compose_train(drama_overrides(dataset, 3, ["trainer=ddp_cpu"], validation_audio=False), out))
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3


def _front_out(present: dict[str, list[bool]]) -> dict:
    B = len(next(iter(present.values())))
    z_p = {b: torch.full((B, 3, 2), float(i + 1)) for i, b in enumerate(present)}
    pres = {b: torch.tensor(v) for b, v in present.items()}
    from isdrama.models.pose_encoder import MultimodalPoseEncoder

    return {"z_p": z_p, "present": pres, "fused": MultimodalPoseEncoder.fuse(z_p, pres)}


def test_pose_branch_sampling_picks_one_present_branch_or_fuses_all():
    # geo = 1, video = 2, text = 3 everywhere; line 1 has no video, line 2 has geo only
    out = _front_out({"geo": [True, True, True], "video": [True, False, False], "text": [True, True, False]})
    assert torch.equal(sample_pose_branches(out, 0.0, torch.Generator().manual_seed(0)), out["fused"])
    assert out["fused"][:, 0, 0].tolist() == [2.0, 2.0, 1.0]
    seen = set()
    for seed in range(40):
        z = sample_pose_branches(out, 1.0, torch.Generator().manual_seed(seed))[:, 0, 0].tolist()
        assert z[0] in (1.0, 2.0, 3.0) and z[1] in (1.0, 3.0) and z[2] == 1.0  # only present branches
        seen.add(z[0])
    assert seen == {1.0, 2.0, 3.0}
    # p = 0.5: some lines keep the fusion, some one branch
    mixed = [sample_pose_branches(out, 0.5, torch.Generator().manual_seed(s))[0, 0, 0].item() for s in range(40)]
    assert 2.0 in mixed and {1.0, 3.0} & set(mixed)


def test_select_pose_branches_uses_the_asked_branch_and_names_what_is_missing():
    out = _front_out({"geo": [True, True], "text": [True, False]})
    assert select_pose_branches(out, ["geo"])[:, 0, 0].tolist() == [1.0, 1.0]
    assert torch.equal(select_pose_branches(out, None), out["fused"])
    with pytest.raises(ValueError, match="video"):
        select_pose_branches(out, ["video"])
    with pytest.raises(ValueError, match="none of the pose branches"):
        select_pose_branches(out, ["text"])


def _prompt_config(**kw):
    from drama_configs import drama_model

    from isdrama.lit.drama import PromptConfig
    from isdrama.utils.config import build_config

    values = {**drama_model("drama_demo")["prompt"], **kw}
    return build_config(PromptConfig, values, "model.prompt")


def test_prompt_choices_follow_the_configured_shares_and_content_drops_only_with_the_prompt():
    from isdrama.lit.drama import prompt_choices

    n = 20000
    has_other = torch.arange(n) % 4 != 0  # a quarter of the lines have no other line of their speaker
    cfg = _prompt_config(other_line=0.4, drop=0.2, content_drop=0.5)
    use_other, drop, drop_content = prompt_choices(has_other, cfg, torch.Generator().manual_seed(0))
    assert not (use_other & ~has_other).any() and not (drop_content & ~drop).any() and not (use_other & drop).any()
    # binomial shares within 5 standard deviations (sqrt(p (1 - p) / n) <= 0.0035 for n >= 15000)
    assert abs(use_other[has_other].float().mean().item() - 0.4) < 5 * (0.4 * 0.6 / 15000) ** 0.5
    assert abs(drop.float().mean().item() - 0.2) < 5 * (0.2 * 0.8 / n) ** 0.5
    assert abs(drop_content.float().mean().item() - 0.1) < 5 * (0.1 * 0.9 / n) ** 0.5
    # content_drop = 0: the same prompt draws (one stream, no second draw) and no content dropped
    paper = prompt_choices(
        has_other, _prompt_config(other_line=0.4, drop=0.2, content_drop=0.0), torch.Generator().manual_seed(0)
    )
    assert torch.equal(paper[0], use_other) and torch.equal(paper[1], drop) and not paper[2].any()
    with pytest.raises(ValueError, match="model.prompt.content_drop"):
        _prompt_config(content_drop=1.5)
    with pytest.raises(ValueError, match="other_line \\+ model.prompt.drop"):
        _prompt_config(other_line=0.9, drop=0.2)


def test_the_demo_drops_content_and_pose_with_the_prompt_and_the_paper_config_does_not():
    from drama_configs import drama_model

    demo, paper = drama_model("drama_demo")["prompt"], drama_model("drama")["prompt"]
    assert demo["content_drop"] == 0.5 and demo["drop_pose_with_content"] is True
    assert paper["content_drop"] == 0.0 and paper["drop_pose_with_content"] is False


def test_the_demo_attention_is_local_beyond_16_s_and_the_paper_attention_is_full():
    from drama_configs import drama_model

    demo, paper = drama_model("drama_demo"), drama_model("drama")
    assert paper["transformer"]["attention"]["window"] is None
    window = demo["transformer"]["attention"]["window"]
    # 16 s at the codec's 75 frames / s: the demo data's longest line (12.4 s) with the longest prompt
    # is attended in full
    assert window == 1200 and window + 1 >= 13 * 75 + demo["prompt"]["max_frames"]


def test_training_lines_that_drop_the_content_lose_the_pose_only_when_configured(trained, dataset, tmp_path):
    """assemble(train=True) with every line's prompt and content dropped: z_c is zero on every frame,
    and z_p too exactly when model.prompt.drop_pose_with_content (the demo's setting); without
    content dropping both stay."""
    from dataclasses import replace

    from hydra.utils import instantiate

    from isdrama.lit.drama import DramaModule

    out, _ = trained
    cfg = compose_train(drama_overrides(dataset, 1), tmp_path)
    datamodule = instantiate(cfg.data, codec=cfg.codec, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    module, _ = DramaModule.load_for_inference(out / "drama" / "drama-last.pt")
    module.set_codec(datamodule.token_loader.codec)
    assert module.prompt_cfg.drop_pose_with_content and module.uncond_drops_pose  # drama_demo's setting
    dropped = replace(module.prompt_cfg, other_line=0.0, drop=1.0, content_drop=1.0)

    def cond(prompt_cfg):
        module.prompt_cfg = prompt_cfg
        parts = module.assemble(batch, module.net, torch.Generator().manual_seed(0), train=True)
        return parts["cond"], parts["mask"]

    c, mask = cond(dropped)
    assert mask.any() and not c["prompt_mask"].any()
    assert not c["z_c"].any() and not c["z_p"].any()
    c, mask = cond(replace(dropped, drop_pose_with_content=False))
    assert not c["z_c"].any() and (c["z_p"][mask].abs().sum(-1) > 0).all()
    c, mask = cond(replace(dropped, content_drop=0.0))
    assert (c["z_c"][mask].abs().sum(-1) > 0).all() and (c["z_p"][mask].abs().sum(-1) > 0).all()
