"""Blocks of the Immersive Drama Transformer: Mamba backends and mamba-ssm names, exact padding,
Drama-MoE routing and balance loss, zero-initialised gates, the paper's parameter count."""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch
from drama_configs import transformer_config, wake_gates
from einops import rearrange
from float_tolerance import sum_order_rtol
from torch.nn import functional as F

from isdrama.models.blocks.attention import (
    CrossAttention,
    RoPESelfAttention,
    apply_rope,
    attention_by_length,
    local_attention,
    rope_angles,
)
from isdrama.models.blocks.cpu_kernels import fused_kernels_available, scan_fused_cpu, scan_fused_train
from isdrama.models.blocks.mamba import BidirectionalMamba, MambaConfig, MambaLayer, flip_valid
from isdrama.models.blocks.moe import ExpertGroup, MoEConfig, gumbel_softmax_fp32, switch_balance_loss
from isdrama.models.blocks.scan import scan_chunked_differentiable, scan_chunked_inplace, selective_scan
from isdrama.models.drama_transformer import DramaTransformer, count_parameters


def mamba_cfg(backend: str = "chunked", **kw) -> MambaConfig:
    values = dict(transformer_config().mamba.__dict__)
    values.update(backend=backend, **kw)
    return MambaConfig(**values)


def scan_inputs(B=2, L=37, E=6, N=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, E, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(B, L, E, generator=g))
    A = -torch.exp(torch.randn(E, N, generator=g))
    Bm, Cm = torch.randn(B, L, N, generator=g), torch.randn(B, L, N, generator=g)
    D = torch.randn(E, generator=g)
    return x, delta, A, Bm, Cm, D


@pytest.mark.parametrize("backend,chunk", [("chunked", 0), ("chunked", 5), ("chunked", 64), ("mambapy", 0)])
@pytest.mark.parametrize("records_graph", [False, True], ids=["no-grad", "autograd"])
def test_scan_backends_equal_the_recurrence(backend, chunk, records_graph):
    """Through ``selective_scan``: on CPU the chunked backend runs the fused kernels (where they
    build; with autograd the forward of the kernel pair with a fused backward)."""
    args = scan_inputs()
    ref = selective_scan(*args, backend="loop")
    if records_graph:
        args = [a.clone().requires_grad_(True) for a in args]
    out = selective_scan(*args, backend=backend, chunk=chunk)
    assert out.requires_grad == records_graph
    exp_ulps = FUSED_EXP_ULPS if (backend == "chunked" and fused_kernels_available()) else 0
    assert_within_scan_rounding(out.detach(), ref, [a.detach() for a in args], exp_ulps)


@pytest.mark.parametrize("chunk", [0, 5, 64])
@pytest.mark.parametrize("form", ["in-place", "differentiable"])
def test_pytorch_chunked_forms_equal_the_recurrence(form, chunk):
    """The PyTorch forms (CUDA without mamba-ssm, or no C compiler): in place without autograd,
    differentiable with it."""
    args = scan_inputs()
    if form == "in-place":
        with torch.no_grad():
            out = scan_chunked_inplace(*args, chunk=chunk)
    else:
        out = scan_chunked_differentiable(*[a.clone().requires_grad_(True) for a in args], chunk=chunk).detach()
    assert_within_scan_rounding(out, selective_scan(*args, backend="loop"), args)


#: glibc's vector expf (libmvec, what the fused kernel's -ffast-math loop calls) is specified
#: within 4 ulp (2.5 measured over 262 k arguments here); an ulp is at most eps relative
FUSED_EXP_ULPS = 4


@pytest.mark.parametrize("shape", [(2, 37, 6, 4), (3, 130, 200, 16)], ids=["tiny", "two-blocks"])
def test_fused_cpu_scan_equals_the_recurrence(shape):
    """The fused kernel builds wherever a C compiler is on PATH (CI has one) and equals the loop;
    (3, 130, 200, 16): channels over several 64-wide blocks with a partial last one."""
    if shutil.which("cc") is None and not os.environ.get("CC"):
        pytest.skip("no C compiler on PATH: the fused kernel cannot be built here")
    assert fused_kernels_available(), "the fused CPU scan did not build (see the log warning)"
    B, L, E, N = shape
    args = scan_inputs(B=B, L=L, E=E, N=N)
    assert_within_scan_rounding(scan_fused_cpu(*args), selective_scan(*args, backend="loop"), args, FUSED_EXP_ULPS)


def assert_within_scan_rounding(out, ref, args, exp_ulps: int = 0):
    """Each output sums at most L products of at most L + 2 factors (decays in (0, 1]) plus the
    D term: two evaluation orders differ by about (2 L + 3) eps times the sum of the terms'
    magnitudes, which is the same scan run on |x|, |B|, |C|, |D|. An exp within ``exp_ulps`` ulp
    adds that many eps per decay factor: L exp_ulps eps more."""
    x, delta, A, Bm, Cm, D = args
    L = x.shape[1]
    magnitude = selective_scan(x.abs(), delta, A, Bm.abs(), Cm.abs(), D.abs(), backend="loop")
    bound = sum_order_rtol(2 * L + 3 + L * exp_ulps) * magnitude
    assert bool(((out - ref).abs() <= bound).all()), float(((out - ref).abs() / bound).max())


def test_scan_gradients_equal_the_recurrence():
    args = [a.clone().requires_grad_(a.is_floating_point()) for a in scan_inputs(L=20)]
    runs = {
        "loop": lambda *a: selective_scan(*a, backend="loop"),
        "chunked-differentiable": lambda *a: scan_chunked_differentiable(*a, chunk=4),
        "mambapy": lambda *a: selective_scan(*a, backend="mambapy"),
    }
    grads = {}
    for name, run in runs.items():
        for a in args:
            a.grad = None
        run(*args).square().sum().backward()
        grads[name] = [a.grad.clone() for a in args]
    # gradients chain two scans (forward and adjoint) over 20 steps: 4 L eps relative to the
    # gradient's scale
    for name in ("chunked-differentiable", "mambapy"):
        for g, ref in zip(grads[name], grads["loop"]):
            tol = sum_order_rtol(4 * 20) * float(ref.abs().max())
            torch.testing.assert_close(g, ref, rtol=0, atol=tol)


@pytest.mark.parametrize("shape", [(2, 37, 6, 4), (2, 100, 130, 16)], ids=["one-chunk-block", "chunks-and-blocks"])
def test_fused_scan_backward_equals_the_recurrence(shape):
    """The training kernels (what ``chunked`` runs with autograd on CPU): y and all six gradients
    against the loop in float64. (2, 100, 130, 16): four 32-frame chunks (the backward recomputes
    each from its stored entering state), three 64-channel blocks (partial sums added)."""
    if not fused_kernels_available():
        pytest.skip("the fused kernels cannot be built here (no C compiler)")
    B, L, E, N = shape
    args = scan_inputs(B=B, L=L, E=E, N=N)
    ref_args = [a.double().requires_grad_(True) for a in args]
    ref = selective_scan(*ref_args, backend="loop")
    weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (ref * weight).sum().backward()
    fused_args = [a.clone().requires_grad_(True) for a in args]
    y = scan_fused_train(*fused_args)
    (y * weight.float()).sum().backward()
    assert_within_scan_rounding(y.detach(), ref.detach().float(), args, FUSED_EXP_ULPS)
    # forward and adjoint scans over L steps with the exp's ulps, sums over the B L frames (dA, dD)
    # and the E channels (dB, dC)
    tol_terms = 4 * L + 2 * L * FUSED_EXP_ULPS + B * L + E
    for name, a, r in zip(("x", "delta", "A", "B", "C", "D"), fused_args, ref_args):
        tol = sum_order_rtol(tol_terms) * float(r.grad.abs().max())
        torch.testing.assert_close(a.grad.double(), r.grad, rtol=0, atol=tol, msg=lambda m, name=name: f"d{name}: {m}")


def test_mamba_layer_has_mamba_ssm_names_and_equals_mambapy_on_the_same_weights():
    from mambapy.mamba import MambaBlock
    from mambapy.mamba import MambaConfig as PyConfig

    d = 16
    layer = MambaLayer(d, mamba_cfg("chunked"))
    names = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    E, N, R = layer.d_inner, layer.d_state, layer.dt_rank
    assert names == {
        "in_proj.weight": (2 * E, d),
        "conv1d.weight": (E, 1, 4),
        "conv1d.bias": (E,),
        "x_proj.weight": (R + 2 * N, E),
        "dt_proj.weight": (E, R),
        "dt_proj.bias": (E,),
        "A_log": (E, N),
        "D": (E,),
        "out_proj.weight": (d, E),
    }
    ref = MambaBlock(PyConfig(d_model=d, n_layers=1, d_state=N, expand_factor=E // d, d_conv=4, dt_rank=R))
    ref.load_state_dict(layer.state_dict(), strict=True)  # one state dict, both implementations
    x = torch.randn(2, 23, d)
    y = layer(x)
    # the projections (d, E terms) and the 23-step scan in another order: (E + d + 2 L) eps of the scale
    tol = sum_order_rtol(E + d + 2 * 23) * float(y.detach().abs().max())
    torch.testing.assert_close(y, ref(x), rtol=0, atol=tol)
    for backend in ("loop", "mambapy"):
        other = MambaLayer(d, mamba_cfg(backend))
        other.load_state_dict(layer.state_dict())
        torch.testing.assert_close(other(x), y, rtol=0, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the mamba-ssm kernel needs CUDA")
def test_cuda_kernel_equals_the_chunked_scan():  # pragma: no cover - runs on GPU machines only
    pytest.importorskip("mamba_ssm")
    args = [a.cuda() for a in scan_inputs(L=300, E=64, N=16)]
    torch.testing.assert_close(
        selective_scan(*args, backend="cuda"), selective_scan(*args, backend="chunked"), rtol=1e-4, atol=1e-4
    )


def test_flip_valid_reverses_each_line_within_its_length():
    x = torch.arange(10.0).view(2, 5, 1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert flip_valid(x, mask)[..., 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]


def run_estimator(model: DramaTransformer, sampling: bool, *args) -> dict:
    """The training-style forward (autograd records, the condition computed inside) or the
    sampling one (no autograd: fused Mamba kernels; the condition precomputed: eval routing
    dispatched once, the last block's tail on the target frames only)."""
    if not sampling:
        return model(*args)
    x, t, frame_mask, zc, zp, prompt, prompt_mask = args
    with torch.no_grad():
        condition = model.condition(frame_mask, zc, zp, prompt, prompt_mask)
        return model(*args, condition=condition)


def transformer_chain(cfg, L: int) -> int:
    """Terms along the longest sum chain of the estimator: per block the projections (d, E),
    the scan and attention over L frames, the experts."""
    d = cfg.d_model
    return cfg.n_blocks * (4 * d + 2 * cfg.mamba.expand * d + 4 * L + 2 * cfg.moe.ff_dim)


# the preset's self-attention (tiny: a 1200-frame window, full on these short lines) and a 4-frame
# window (local on them: the banded path, padding and sampling included)
WINDOWS = pytest.mark.parametrize("window", [None, 4], ids=["preset-attention", "local-attention"])


def windowed_config(window):
    return transformer_config() if window is None else transformer_config(**{"attention.window": window})


@WINDOWS
@pytest.mark.parametrize("sampling", [False, True], ids=["training-forward", "sampling-forward"])
def test_padded_line_gives_the_output_of_the_line_alone(sampling, window):
    torch.manual_seed(0)
    cfg = windowed_config(window)
    model = wake_gates(DramaTransformer(cfg).eval())
    T, P, C = 19, 7, cfg.latent_dim
    x, zc, zp = torch.randn(1, T, C), torch.randn(1, T, cfg.content_dim), torch.randn(1, T, cfg.pose_dim)
    prompt = torch.randn(1, P, C)
    t = torch.tensor([0.3])
    alone = run_estimator(
        model, sampling, x, t, torch.ones(1, T, dtype=torch.bool), zc, zp, prompt, torch.ones(1, P, dtype=torch.bool)
    )

    def pad(v, n):
        return torch.cat([v, torch.randn(1, n, v.shape[-1]) * 100], dim=1)  # garbage in the pads

    mask_t = torch.tensor([[True] * T + [False] * 6])
    mask_p = torch.tensor([[True] * P + [False] * 4])
    other = torch.randn(1, T + 6, C)  # a second, longer line in the batch
    padded = run_estimator(
        model,
        sampling,
        torch.cat([pad(x, 6), other]),
        torch.tensor([0.3, 0.8]),
        torch.cat([mask_t, torch.ones(1, T + 6, dtype=torch.bool)]),
        torch.cat([pad(zc, 6), torch.randn(1, T + 6, cfg.content_dim)]),
        torch.cat([pad(zp, 6), torch.randn(1, T + 6, cfg.pose_dim)]),
        torch.cat([pad(prompt, 4), torch.randn(1, P + 4, C)]),
        torch.cat([mask_p, torch.ones(1, P + 4, dtype=torch.bool)]),
    )
    # exact in arithmetic; in floats the batched kernels may sum in another order
    chain = transformer_chain(cfg, T + P)
    for key in ("velocity", "f0"):
        ref = alone[key]
        tol = sum_order_rtol(chain) * float(ref.detach().abs().max())
        torch.testing.assert_close(padded[key][:1, :T], ref, rtol=0, atol=tol)


@WINDOWS
def test_the_sampling_forward_equals_the_training_forward(window):
    """What sampling skips or fuses (fused kernels, routing once, the last block's tail on the
    target frames) changes no velocity beyond rounding and the fused exp's ulps."""
    torch.manual_seed(1)
    cfg = windowed_config(window)
    model = wake_gates(DramaTransformer(cfg).eval())
    T, P, C = 23, 9, cfg.latent_dim
    frame_mask = torch.ones(2, T, dtype=torch.bool)
    frame_mask[1, 15:] = False
    prompt_mask = torch.ones(2, P, dtype=torch.bool)
    prompt_mask[0, 5:] = False
    args = (
        torch.randn(2, T, C),
        torch.tensor([0.3, 0.7]),
        frame_mask,
        torch.randn(2, T, cfg.content_dim),
        torch.randn(2, T, cfg.pose_dim),
        torch.randn(2, P, C),
        prompt_mask,
    )
    training, sampling = run_estimator(model, False, *args), run_estimator(model, True, *args)
    L = T + P
    for key in ("velocity", "f0"):
        ref = training[key].detach()
        tol = sum_order_rtol(transformer_chain(cfg, L) + cfg.n_blocks * 2 * L * FUSED_EXP_ULPS) * float(ref.abs().max())
        torch.testing.assert_close(sampling[key], ref, rtol=0, atol=tol)
    assert bool((sampling["velocity"][1, 15:] == 0).all())


def run_with_scene(model: DramaTransformer, B: int, T: int, P: int) -> dict:
    cfg = model.config
    return model(
        torch.randn(B, T, cfg.latent_dim),
        torch.rand(B),
        torch.ones(B, T, dtype=torch.bool),
        torch.randn(B, T, cfg.content_dim),
        torch.randn(B, T, cfg.pose_dim),
        torch.randn(B, P, cfg.latent_dim),
        torch.ones(B, P, dtype=torch.bool),
        scene=torch.randn(B, 2, cfg.scene_dim),
        scene_mask=torch.ones(B, 2, dtype=torch.bool),
    )


def test_zero_initialised_model_outputs_zero_velocity_and_cross_attention_gate_gets_a_gradient():
    cfg = transformer_config()
    model = DramaTransformer(cfg)
    B, T, P = 2, 11, 3
    out = run_with_scene(model, B, T, P)
    assert torch.count_nonzero(out["velocity"]) == 0
    # DiT: at step 0 only the final layer learns; once it has moved (as after the first step), the
    # cross-attention, a residual of its own, gets a gradient at alpha = 0 although every AdaLN
    # gate is still 0 (no path that is a product of two zero gates)
    with torch.no_grad():
        model.final.proj.weight.normal_()
    out = run_with_scene(model, B, T, P)
    (out["velocity"] - 1).square().mean().backward()
    assert all(float(b.adaln.linear.weight.abs().max()) == 0 for b in model.blocks)
    alphas = [b.cross_attn.alpha.grad for b in model.blocks]
    assert all(a is not None and float(a.abs()) > 0 for a in alphas)


def moe_cfg(**kw) -> MoEConfig:
    values = dict(transformer_config().moe.__dict__)
    values.update(kw)
    return MoEConfig(**values)


def test_switch_balance_loss_equals_a_hand_computation():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.25, 0.25], [0.0, 0.0, 1.0]]])
    mask = torch.tensor([[True, True, True, False]])  # the padded frame is excluded
    # top-1 of the 3 valid frames: experts 0, 1, 0 -> f = (2/3, 1/3, 0); P = mean probs
    P = [(0.7 + 0.1 + 0.5) / 3, (0.2 + 0.6 + 0.25) / 3, (0.1 + 0.3 + 0.25) / 3]
    expected = 3 * (2 / 3 * P[0] + 1 / 3 * P[1] + 0 * P[2])
    assert float(switch_balance_loss(probs, mask)) == pytest.approx(expected, rel=1e-6)
    uniform = torch.full((1, 8, 4), 0.25)
    uniform[0, :, 0] += 1e-3  # ties broken toward expert 0
    assert float(switch_balance_loss(uniform.softmax(-1), None)) == pytest.approx(1.0, abs=1e-2)


def test_gumbel_softmax_stays_finite_for_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0, 3.0]]).expand(1000, 4)
    w = gumbel_softmax_fp32(logits.half(), temperature=0.3, eps=1e-6)
    assert w.dtype == torch.float32 and torch.isfinite(w).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(1000))


def test_routing_is_top1_and_deterministic_at_eval_and_every_expert_learns_in_training():
    torch.manual_seed(0)
    group = ExpertGroup(8, 8, moe_cfg(n_experts=4, ff_dim=16), routed=True)
    x, r = torch.randn(2, 30, 8), torch.randn(2, 30, 8)
    group.eval()
    y1, s1 = group(x, r, None, temperature=1.0)
    y2, _ = group(x, r, None, temperature=1.0)
    assert torch.equal(y1, y2)
    choice = group.router(r).argmax(-1)
    assert torch.equal(s1["choice"], choice)
    for e in range(4):  # each frame went through its one expert
        sel = choice == e
        if sel.any():
            torch.testing.assert_close(y1[sel], group.experts[e](x[sel]))
    group.train()
    y, stats = group(x, r, None, temperature=2.0)
    (y.square().mean() + stats["balance"]).backward()
    for expert in group.experts:
        assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in expert.parameters())


def test_ablation_switches_remove_their_blocks():
    base = count_parameters(DramaTransformer(transformer_config()))
    no_moe = DramaTransformer(transformer_config(**{"moe.enabled": False}))
    assert all(b.moe.spatial is None and b.moe.prosodic.router is None for b in no_moe.blocks)
    no_f0 = DramaTransformer(transformer_config(f0_head=False))
    assert no_f0.f0_head is None and count_parameters(no_f0) < base
    linear = DramaTransformer(transformer_config(**{"moe.expert": "linear"}))
    assert type(linear.blocks[0].moe.prosodic.experts[0]).__name__ == "LinearExpert"
    no_mamba = DramaTransformer(transformer_config(mamba_enabled=False))
    assert type(no_mamba.blocks[0].sequence).__name__ == "TransformerStack"


def test_paper_configuration_has_177m_parameters_on_the_meta_device():
    from drama_configs import drama_model

    model_cfg = drama_model("drama")
    widths = dict(
        latent_dim=model_cfg["latent_dim"],
        content_dim=model_cfg["content"]["d_model"],
        pose_dim=model_cfg["pose_encoder"]["d_model"],
        scene_dim=768,  # the scene features of the paper's video backbone (CLIP ViT-B/16)
    )
    with torch.device("meta"):
        model = DramaTransformer(transformer_config("drama", **widths))
    n = count_parameters(model)
    assert abs(n - 177e6) <= 0.05 * 177e6, f"{n / 1e6:.1f} M parameters"
    assert math.isclose(model.config.d_model, 768) and len(model.blocks) == 4


def test_activation_checkpointing_gives_the_same_gradients():
    from isdrama.models.blocks.mamba import MambaStack

    torch.manual_seed(0)
    plain = MambaStack(16, 2, mamba_cfg(checkpoint=False), eps=1e-6).train()
    ckpt = MambaStack(16, 2, mamba_cfg(checkpoint=True), eps=1e-6).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 13, 16)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, 9:] = False
    grads = []
    for stack in (plain, ckpt):
        stack.zero_grad()
        stack(x, mask).square().sum().backward()
        grads.append({k: p.grad.clone() for k, p in stack.named_parameters()})
    for k in grads[0]:  # the recomputation is the same arithmetic: identical
        assert torch.equal(grads[0][k], grads[1][k]), k


@pytest.fixture
def fresh_kernel_state(monkeypatch, tmp_path):
    """An empty kernel cache and no loaded kernel; the session's kernel comes back afterwards."""
    from isdrama.models.blocks import cpu_kernels

    saved = dict(cpu_kernels._state)
    cpu_kernels._state.clear()
    monkeypatch.setenv("ISDRAMA_KERNEL_CACHE", str(tmp_path / "kernels"))
    yield cpu_kernels
    cpu_kernels._state.clear()
    cpu_kernels._state.update(saved)


def test_fused_kernel_is_built_once_and_an_unbuildable_one_falls_back_with_a_warning(
    fresh_kernel_state, monkeypatch, caplog
):
    cpu_kernels = fresh_kernel_state
    if shutil.which("cc") is not None:
        lib = cpu_kernels.build_kernel()
        assert lib.parent == cpu_kernels.kernel_cache_dir() and lib.name.startswith("mamba_inner-")
        stamp = lib.stat().st_mtime_ns
        assert cpu_kernels.build_kernel() == lib and lib.stat().st_mtime_ns == stamp  # cached, not rebuilt
        assert [p.name for p in lib.parent.iterdir()] == [lib.name]  # no temporary files left
    cpu_kernels._state.clear()
    monkeypatch.setenv("CC", "no-such-compiler")
    args = scan_inputs()
    with caplog.at_level("WARNING", logger="isdrama.models.blocks.cpu_kernels"), torch.no_grad():
        out = selective_scan(*args, backend="chunked")
    assert "fused CPU kernels of the Mamba layer are unavailable" in caplog.text and "no-such-compiler" in caplog.text
    assert_within_scan_rounding(out, selective_scan(*args, backend="loop"), args)  # the in-place form ran
    with pytest.raises(RuntimeError, match="unavailable"):
        scan_fused_cpu(*args)


def test_fused_kernel_can_be_turned_off(fresh_kernel_state, monkeypatch):
    monkeypatch.setenv("ISDRAMA_CPU_KERNELS", "0")
    assert not fresh_kernel_state.fused_kernels_available()
    assert not (fresh_kernel_state.kernel_cache_dir()).exists()  # nothing compiled


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-direction", "bidirectional"])
def test_mamba_layer_without_autograd_runs_the_fused_kernels_and_equals_the_pytorch_path(bidirectional):
    """In sampling (no autograd, CPU) the layer runs fused on its lines packed without padding
    (conv + silu, softplus + scan + D + gate; the backward direction read backwards instead of
    flipped); it equals the autograd path on the same weights, padded rows exactly 0."""
    if not fused_kernels_available():
        pytest.skip("the fused kernels cannot be built here (no C compiler)")
    torch.manual_seed(0)
    d, L = 24, 41
    cfg = mamba_cfg("chunked", bidirectional=bidirectional)
    layer = BidirectionalMamba(d, cfg) if bidirectional else MambaLayer(d, cfg)
    with torch.no_grad():  # non-trivial conv bias and skip term
        for p in layer.modules():
            if isinstance(p, MambaLayer):
                p.conv1d.bias.normal_()
                p.D.normal_()
    first = layer.forward_mamba if bidirectional else layer
    x = torch.randn(4, L, d)
    mask = torch.ones(4, L, dtype=torch.bool)
    mask[1, 30:] = False
    mask[2, 4:] = False
    mask[3, 1:] = False  # a one-frame line
    reference = layer(x, mask)  # parameters require grad: the autograd path (PyTorch conv, gate, flips)
    assert reference.requires_grad and not first.runs_fused(x)
    with torch.no_grad():
        assert first.runs_fused(x)
        fused = layer(x, mask)
        unpadded = layer(x[:, :30], mask[:, :30])  # no line longer than 30: the same lines, less padding
    E, K = first.d_inner, first.conv1d.weight.shape[-1]
    # projections (d, E terms; both directions' out_proj in one sum of 2 E), the conv (K), the
    # scan ((2 + exp ulps) L + 3), the silu exps, the sum of the two directions
    n_out = (2 if bidirectional else 1) * E
    tol = sum_order_rtol(d + n_out + K + (2 + FUSED_EXP_ULPS) * L + 3 + 2 * FUSED_EXP_ULPS + 1)
    tol *= float(reference.detach().abs().max())
    torch.testing.assert_close(fused, reference.detach(), rtol=0, atol=tol)
    assert bool((fused[1, 30:] == 0).all()) and bool((fused[2, 4:] == 0).all()) and bool((fused[3, 1:] == 0).all())
    torch.testing.assert_close(unpadded[1:], fused[1:, :30], rtol=0, atol=tol)  # the padding is never read


def attention_rounding(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, L: int) -> float:
    """Bound between two float32 SDPA computations of the same softmax attention: each scaled
    score q.k / sqrt(d) within dh eps |q| |k| / sqrt(d) (delta), the normalised weights within 2 delta
    + 4 ulp of exp relative, and two orders of the L-term weighted sums (2 L eps): times max |v|."""
    dh = q.shape[-1]
    delta = sum_order_rtol(dh) * float(q.norm(dim=-1).max() * k.norm(dim=-1).max()) / math.sqrt(dh)
    return (2 * delta + sum_order_rtol(2 * L + 4)) * float(v.abs().max())


def self_attention_reference(
    layer: RoPESelfAttention, x: torch.Tensor, attn_mask: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """The module's output (B, L, D) by one SDPA call with ``attn_mask`` on its rotated q, k, v, and
    the bound between two float32 computations of it: the attention's rounding carried through
    out() by its largest row sum, plus out()'s own D-term sums."""
    H, L = layer.n_heads, x.shape[1]
    with torch.no_grad():
        q, k, v = rearrange(layer.qkv(x), "b l (three h d) -> three b h l d", three=3, h=H)
        cos, sin = rope_angles(L, q.shape[-1], layer.rope_base, x.device)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = layer.out(rearrange(y, "b h l d -> b l (h d)"))
        w_rows = float(layer.out.weight.abs().sum(dim=1).max())
    D = layer.out.in_features
    return out, w_rows * (attention_rounding(q, k, v, L) + sum_order_rtol(D + 1) * float(y.abs().max()))


def test_attention_by_length_equals_the_key_padding_mask_on_valid_queries():
    """Sampling's self-attention runs each group of equal-length lines unpadded: valid queries get
    what the key-padding mask gives, padded queries 0."""
    g = torch.Generator().manual_seed(0)
    B, H, L, dh = 5, 2, 23, 8
    q, k, v = (torch.randn(B, H, L, dh, generator=g) for _ in range(3))
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 9:] = False
    mask[2, 9:] = False  # two lines of one length: one call
    mask[3, 1:] = False  # a one-frame line
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    out = attention_by_length(q, k, v, mask)
    valid = mask[:, None, :, None].expand_as(out)
    tol = attention_rounding(q, k, v, L)
    torch.testing.assert_close(out[valid], reference[valid], rtol=0, atol=tol)
    assert bool((out[~valid] == 0).all())
    full = torch.ones(B, L, dtype=torch.bool)
    unmasked = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(attention_by_length(q, k, v, full), unmasked, rtol=0, atol=tol)
    # the module takes it without autograd (padded rows: out's bias only), the masked SDPA with it
    layer = RoPESelfAttention(H * dh, H, 10000.0, 0.0)
    x = torch.randn(B, L, H * dh, generator=g)
    with_grad = layer(x, mask)
    with torch.no_grad():
        sampled = layer(x, mask)
    _, out_tol = self_attention_reference(layer, x, mask[:, None, None, :])
    assert bool((sampled[~mask] == layer.out.bias).all())
    torch.testing.assert_close(sampled[mask], with_grad.detach()[mask], rtol=0, atol=out_tol)


@pytest.mark.parametrize("window, L", [(1, 23), (4, 23), (5, 23), (6, 40), (12, 23), (21, 23), (22, 23), (30, 23)])
def test_local_attention_equals_the_banded_mask(window, L):
    """Local attention gives, on valid queries, what one SDPA call with the band |i - j| <= window
    and the key-padding mask gives (the whole line once window >= L - 1), and finite padded
    queries; the module takes it above window + 1 frames, with and without autograd. Windows 1-6
    take the blocks, 12 and 21 the whole line with the band as mask, 22 and 30 full attention in
    the module (the band mask when called directly)."""
    g = torch.Generator().manual_seed(window)
    B, H, dh = 4, 2, 8
    q, k, v = (torch.randn(B, H, L, dh, generator=g) for _ in range(3))
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 9:] = False
    mask[2, 1:] = False  # a one-frame line
    mask[3, L - 3 :] = False
    idx = torch.arange(L)
    band = (idx[:, None] - idx[None, :]).abs() <= window
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=band & mask[:, None, None, :])
    out = local_attention(q, k, v, mask, window)
    valid = mask[:, None, :, None].expand_as(out)
    # masked keys add exact zeros: the same softmax over the same valid keys, summed in another order
    tol = attention_rounding(q, k, v, L)
    torch.testing.assert_close(out[valid], reference[valid], rtol=0, atol=tol)
    assert bool(torch.isfinite(out).all())
    unmasked = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
    torch.testing.assert_close(local_attention(q, k, v, None, window), unmasked, rtol=0, atol=tol)
    if window >= L - 1:  # the band is the whole line
        full = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        torch.testing.assert_close(out[valid], full[valid], rtol=0, atol=tol)
    layer = RoPESelfAttention(H * dh, H, 10000.0, 0.0, window)
    x = torch.randn(B, L, H * dh, generator=g)
    expected, out_tol = self_attention_reference(layer, x, band & mask[:, None, None, :])
    with torch.no_grad():
        sampled = layer(x, mask)
    torch.testing.assert_close(sampled[mask], expected[mask], rtol=0, atol=out_tol)
    torch.testing.assert_close(layer(x, mask).detach()[mask], expected[mask], rtol=0, atol=out_tol)


def test_local_attention_gradients_stay_in_the_window():
    """A frame's output has no gradient from the frames beyond the window, and one from each
    frame within it."""
    g = torch.Generator().manual_seed(0)
    L, window = 30, 5
    q, k, v = (torch.randn(1, 2, L, 8, generator=g, requires_grad=True) for _ in range(3))
    local_attention(q, k, v, None, window)[0, :, 12].sum().backward()
    reached = (k.grad[0].abs().sum(dim=(0, 2)) > 0) & (v.grad[0].abs().sum(dim=(0, 2)) > 0)
    assert reached.tolist() == [abs(j - 12) <= window for j in range(L)]
    with pytest.raises(ValueError, match="attention.window must be >= 1"):
        RoPESelfAttention(16, 2, 10000.0, 0.0, 0)


def test_cross_attention_to_one_key_is_its_projected_value():
    """Sampling with a one-key context (the null scene): every frame gets out(v), as the general
    path gives with a second, masked key (its softmax weight exactly 0, the first's exactly 1)."""
    g = torch.Generator().manual_seed(0)
    layer = CrossAttention(16, 12, 4, 0.0)
    x, ctx = torch.randn(3, 9, 16, generator=g), torch.randn(3, 1, 12, generator=g)
    with torch.no_grad():
        out = layer(x, ctx, None)
        two = torch.cat([ctx, torch.randn(3, 1, 12, generator=g)], dim=1)
        general = layer(x, two, torch.tensor([[True, False]] * 3))
    layer(x, ctx, None).sum().backward()  # in training the general path runs: q is in the graph (for DDP)
    assert layer.q.weight.grad is not None
    v = layer.kv(ctx)[..., 16:]
    w_rows = layer.out.weight.abs().sum(dim=1).max()
    tol = sum_order_rtol(16 + 1) * float(w_rows * v.abs().max() + layer.out.bias.abs().max())
    torch.testing.assert_close(out, general, rtol=0, atol=tol)
    assert out.shape == (3, 9, 16) and bool((out == out[:, :1]).all())


def test_rope_angles_are_cached_and_serve_training_after_inference_mode():
    """One cos/sin pair per (length, dim, base, device), made outside inference mode: angles first
    made in a validation (inference mode) still serve a training step's backward."""
    layer = RoPESelfAttention(16, 2, 1234.5, 0.0)  # a base no other test uses: a fresh cache entry
    x = torch.randn(2, 11, 16)
    with torch.inference_mode():
        layer(x)
    cos, sin = rope_angles(11, 8, 1234.5, x.device)
    assert rope_angles(11, 8, 1234.5, x.device)[0] is cos and not cos.is_inference()
    layer(x.requires_grad_()).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    half = torch.arange(4, dtype=torch.float32)
    angle = 10.0 * 1234.5 ** (-2 * half / 8)  # position 10, pair i: 10 / base^(2i / dim)
    torch.testing.assert_close(cos[10], torch.cat([angle, angle]).cos())
