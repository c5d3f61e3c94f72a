"""The rectified-flow core: exact Euler integration of an oracle field, guidance algebra in one
batched call, the zero-initialised model's loss, determinism, and a batch that overfits."""

from __future__ import annotations

import pytest
import torch
from drama_configs import drama_model, transformer_config, wake_gates
from float_tolerance import sum_order_rtol
from torch import nn

from isdrama.flow import (
    FlowConfig,
    GuidanceBranch,
    RectifiedFlow,
    concat_conditions,
    guidance_terms,
    time_grid,
)
from isdrama.models.drama_transformer import DramaTransformer
from isdrama.utils.config import build_config


def flow_config(**kw) -> FlowConfig:
    values = drama_model()["flow"]
    values.update(kw)
    return build_config(FlowConfig, values, "model.flow")


class OracleField(nn.Module):
    """v(x, t) = (x1 - x) / (1 - t): the straight line to a known x1 (exact for Euler)."""

    def __init__(self, x1: torch.Tensor):
        super().__init__()
        self.x1 = x1

    def forward(self, x_t, t, frame_mask, **cond):
        return {"velocity": (self.x1 - x_t) / (1 - t)[:, None, None].clamp_min(1e-6)}


class LinearField(nn.Module):
    """v = x W + prompt summary: depends on x and on each branch's condition."""

    def __init__(self, c: int):
        super().__init__()
        self.w = nn.Linear(c, c)
        self.calls = 0

    def forward(self, x_t, t, frame_mask, prompt, prompt_mask):
        self.calls += 1
        summary = (prompt * prompt_mask.unsqueeze(-1)).sum(1, keepdim=True)
        return {"velocity": self.w(x_t) * t[:, None, None] + summary}


@pytest.mark.parametrize("sway", [None, -1.0])
def test_oracle_velocity_makes_euler_return_x1(sway):
    x1 = torch.randn(2, 9, 4)
    flow = RectifiedFlow(OracleField(x1), 4, flow_config(steps=7, sway=sway))
    mask = torch.ones(2, 9, dtype=torch.bool)
    out = flow.sample(mask, [GuidanceBranch(1.0, {})], seed=3)
    # each step moves x to x + dt (x1 - x) / (1 - t); the last step lands on x1 up to rounding
    torch.testing.assert_close(out, x1, rtol=0, atol=sum_order_rtol(7 * 4) * float(x1.abs().max()))


def test_time_grid_spans_0_to_1_and_sway_spends_steps_near_the_noise():
    t = time_grid(10, None)
    s = time_grid(10, -1.0)
    assert float(t[0]) == 0.0 and float(t[-1]) == 1.0 and float(s[-1]) == pytest.approx(1.0)
    assert float(s[1]) < float(t[1])


def test_guidance_weights_and_one_batched_call():
    torch.manual_seed(0)
    field = LinearField(3)
    flow = RectifiedFlow(field, 3, flow_config())
    x, t = torch.randn(2, 5, 3), torch.full((2,), 0.4)
    mask = torch.ones(2, 5, dtype=torch.bool)
    cond = {"prompt": torch.randn(2, 4, 3), "prompt_mask": torch.ones(2, 4, dtype=torch.bool)}
    prev = {"prompt": torch.randn(2, 6, 3), "prompt_mask": torch.ones(2, 6, dtype=torch.bool)}
    uncond = {"prompt": torch.zeros(2, 1, 3), "prompt_mask": torch.zeros(2, 1, dtype=torch.bool)}

    def v(c):
        return field(x, t, mask, **c)["velocity"]

    field.calls = 0
    g1a1 = flow.guided_velocity(x, t, mask, guidance_terms(cond, uncond, 1.0, prev, alpha=1.0))
    assert field.calls == 1  # all branches in one forward
    torch.testing.assert_close(g1a1, v(cond))
    ccg = flow.guided_velocity(x, t, mask, guidance_terms(cond, uncond, 3.0, prev, alpha=0.4))
    torch.testing.assert_close(ccg, 3 * 0.4 * v(cond) + 3 * 0.6 * v(prev) - 2 * v(uncond), rtol=1e-5, atol=1e-5)
    cfg = flow.guided_velocity(x, t, mask, guidance_terms(cond, uncond, 2.0))
    torch.testing.assert_close(cfg, 2 * v(cond) - v(uncond), rtol=1e-5, atol=1e-5)
    # two scales: the voice's direction (cond - uncond) by g = 3, the content's (uncond - nothing) by g_c = 2
    nothing = {"prompt": torch.randn(2, 3, 3), "prompt_mask": torch.ones(2, 3, dtype=torch.bool)}  # a third field
    field.calls = 0
    two = flow.guided_velocity(x, t, mask, guidance_terms(cond, uncond, 3.0, nothing=nothing, content_scale=2.0))
    assert field.calls == 1
    expected = v(nothing) + 2 * (v(uncond) - v(nothing)) + 3 * (v(cond) - v(uncond))
    torch.testing.assert_close(two, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="without prompt and content"):
        guidance_terms(cond, uncond, 3.0, content_scale=2.0)


def test_concat_conditions_pads_and_names_disagreements():
    a = {"prompt": torch.ones(1, 2, 3), "temperature": 1.0, "scene": None}
    b = {"prompt": torch.ones(1, 4, 3), "temperature": 1.0, "scene": None}
    out = concat_conditions([a, b])
    assert out["prompt"].shape == (2, 4, 3) and float(out["prompt"][0, 2:].abs().sum()) == 0
    with pytest.raises(ValueError, match="temperature"):
        concat_conditions([a, dict(b, temperature=2.0)])
    with pytest.raises(ValueError, match="scene"):
        concat_conditions([a, dict(b, scene=torch.ones(1, 1, 2))])


def tiny_flow(seed: int = 0) -> tuple[RectifiedFlow, dict]:
    torch.manual_seed(seed)
    cfg = transformer_config(latent_dim=8, content_dim=6, pose_dim=6, scene_dim=1)
    flow = RectifiedFlow(DramaTransformer(cfg), 8, flow_config(steps=8))
    B, T, P = 2, 24, 5
    cond = {
        "z_c": torch.randn(B, T, 6),
        "z_p": torch.randn(B, T, 6),
        "prompt": torch.randn(B, P, 8),
        "prompt_mask": torch.ones(B, P, dtype=torch.bool),
    }
    return flow, cond


def test_zero_initialised_model_loss_equals_the_mean_squared_target():
    flow, cond = tiny_flow()
    x1 = torch.randn(2, 24, 8)
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 20:] = False
    res = flow.loss(x1, mask, cond, generator=torch.Generator().manual_seed(1))
    target = (x1 - res["noise"])[mask]  # the zero velocity's error is the whole target
    assert float(res["loss"].detach()) == pytest.approx(float(target.square().mean()), rel=sum_order_rtol(24 * 2 * 8))


def test_sampling_is_deterministic_for_a_seed():
    flow, cond = tiny_flow()
    with torch.no_grad():
        flow.estimator.final.proj.weight.normal_()
    mask = torch.ones(2, 24, dtype=torch.bool)
    flow.eval()
    a = flow.sample(mask, [GuidanceBranch(1.0, cond)], seed=5)
    b = flow.sample(mask, [GuidanceBranch(1.0, cond)], seed=5)
    c = flow.sample(mask, [GuidanceBranch(1.0, cond)], seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_estimators_condition_work_runs_once_per_sampling_and_changes_nothing():
    """DramaTransformer.condition (packing, embeddings, router inputs) is computed once for all
    Euler steps, and a velocity from it equals the one computed in the same call."""
    flow, cond = tiny_flow()
    wake_gates(flow.estimator)
    flow.eval()
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 17:] = False
    uncond = dict(cond, prompt_mask=torch.zeros_like(cond["prompt_mask"]))
    branches = guidance_terms(cond, uncond, 2.0)
    x, t = torch.randn(2, 24, 8), torch.full((2,), 0.4)
    with torch.no_grad():
        fresh = flow.guided_velocity(x, t, mask, branches)
        reused = flow.guided_velocity(x, t, mask, branches, flow.batch_branches(mask, branches))
    assert torch.equal(fresh, reused) and fresh.abs().max() > 0
    calls = []
    original = flow.estimator.condition
    flow.estimator.condition = lambda **kw: calls.append(1) or original(**kw)
    flow.sample(mask, branches, steps=6, seed=0)
    assert len(calls) == 1


def test_statistics_standardise_and_round_trip():
    flow, _ = tiny_flow()
    x = torch.randn(1000, 8) * torch.arange(1, 9) + 5
    flow.fit_statistics(x.sum(0), (x**2).sum(0), x.shape[0])
    z = flow.normalize(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(flow.denormalize(z), x, rtol=1e-5, atol=1e-4)


def test_one_batch_overfits(one_torch_thread):
    """One line, one noise draw, the 8 times of an 8-step Euler grid: the loss falls below 5 % of
    its start, and sampling from that noise on that grid lands on the target (cosine > 0.95)."""
    torch.manual_seed(0)
    small = dict(d_model=32, n_heads=2, **{"moe.ff_dim": 32, "moe.router_heads": 2})
    cfg = transformer_config(latent_dim=8, content_dim=6, pose_dim=6, scene_dim=1, **small)
    steps = 8
    flow = RectifiedFlow(DramaTransformer(cfg), 8, flow_config(steps=steps))
    T, P = 24, 5
    x1 = torch.sin(torch.linspace(0, 6, T))[None, :, None] * torch.linspace(-1, 1, 8) + 0.3
    x0 = torch.randn(1, T, 8, generator=torch.Generator().manual_seed(1))
    line = {"z_c": torch.randn(1, T, 6), "z_p": torch.randn(1, T, 6), "prompt": torch.randn(1, P, 8)}
    line["prompt_mask"] = torch.ones(1, P, dtype=torch.bool)
    grid = time_grid(steps, None)[:-1]
    batch = {k: v.expand(steps, *v.shape[1:]) for k, v in line.items()}
    mask = torch.ones(steps, T, dtype=torch.bool)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = flow.loss(x1.expand(steps, -1, -1), mask, batch, noise=x0.expand(steps, -1, -1), t=grid)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
    flow.eval()
    sample = flow.sample(mask[:1], [GuidanceBranch(1.0, line)], noise=x0)
    cos = torch.nn.functional.cosine_similarity(sample.flatten(), x1.flatten(), dim=0)
    assert float(cos) > 0.95, float(cos)


def test_the_unconditional_branch_drops_the_content_only_when_asked():
    from isdrama.inference.line_generator import guidance_branches

    cond = {
        "z_c": torch.randn(2, 5, 3),
        "prompt": torch.randn(2, 4, 3),
        "prompt_mask": torch.ones(2, 4, dtype=torch.bool),
    }
    paper = guidance_branches(cond, 3.0, 0.4)
    assert [b.weight for b in paper] == [3.0, -2.0]
    assert paper[0].cond is cond and torch.equal(paper[1].cond["z_c"], cond["z_c"])
    assert not paper[1].cond["prompt_mask"].any()
    prev = (torch.randn(2, 6, 3), torch.ones(2, 6, dtype=torch.bool))
    dropped = guidance_branches(cond, 3.0, 0.4, prev, drop_content=True)
    assert [b.weight for b in dropped] == pytest.approx([1.2, 1.8, -2.0])
    assert torch.equal(dropped[1].cond["z_c"], cond["z_c"])  # the previous line's branch keeps the content
    assert not dropped[2].cond["z_c"].any() and not dropped[2].cond["prompt_mask"].any()
    assert cond["z_c"].abs().sum() > 0  # the caller's condition is untouched
    # two scales: g on the voice's direction v(c, p) - v(c), g_c on the words' v(c) - v(nothing)
    two = guidance_branches(cond, 3.0, 0.4, drop_content=True, content_scale=2.0)
    assert [b.weight for b in two] == pytest.approx([3.0, -1.0, -1.0])
    assert torch.equal(two[1].cond["z_c"], cond["z_c"]) and not two[1].cond["prompt_mask"].any()
    assert not two[2].cond["z_c"].any()
    # g_c = 1 is the paper's guidance again; g = g_c = 1 the conditional field alone
    assert [b.weight for b in guidance_branches(cond, 3.0, 0.4, drop_content=True, content_scale=1.0)] == [3.0, -2.0]
    assert [b.cond for b in guidance_branches(cond, 1.0, 0.4, drop_content=True)] == [cond]
    with pytest.raises(ValueError, match="content_drop"):
        guidance_branches(cond, 3.0, 0.4, content_scale=2.0)
    # a model trained to drop the pose with the content: the branch without both has no pose either
    posed = dict(cond, z_p=torch.randn(2, 5, 3))
    bare = guidance_branches(posed, 3.0, 0.4, drop_content=True, drop_pose=True)
    assert torch.equal(bare[0].cond["z_p"], posed["z_p"]) and not bare[1].cond["z_p"].any()
    assert not bare[1].cond["z_c"].any() and posed["z_p"].abs().sum() > 0
