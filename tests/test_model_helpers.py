"""The shared helpers: config dataclasses from mappings, and frozen pretrained wrappers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from isdrama.models.layers import FreezableBackbone
from isdrama.utils.config import build_config, to_plain


@dataclass
class Inner:
    width: int
    scale: float = 1.0


@dataclass
class Outer:
    name: str
    inner: Inner
    maybe: Optional[Inner] = None
    listed: list[int] = field(default_factory=list)


def test_build_config_nested_from_dictconfig():
    cfg = OmegaConf.create(
        {"name": "x", "inner": {"width": 3}, "maybe": {"width": 4, "scale": 2.0}, "listed": [1, 2], "alias": "${name}"}
    )
    built = build_config(Outer, {k: cfg[k] for k in ("name", "inner", "maybe", "listed")}, "model.outer")
    assert built == Outer("x", Inner(3), Inner(4, 2.0), [1, 2])
    assert type(built.listed) is list  # plain containers, not ListConfig
    assert build_config(Outer, {"name": "x", "inner": {"width": 3}}, "m", name="y").name == "y"
    assert build_config(Inner, None, "m", width=5) == Inner(5)
    same = Inner(7)
    assert build_config(Inner, same, "m") is same
    assert to_plain(OmegaConf.create({"a": "${b}", "b": 1})) == {"a": 1, "b": 1}


def test_build_config_errors_name_the_path_the_class_and_the_key():
    with pytest.raises(ValueError, match=r"model\.outer: unknown key\(s\) \['widht'\] \(Outer fields"):
        build_config(Outer, {"name": "x", "inner": {"width": 1}, "widht": 2}, "model.outer")
    with pytest.raises(ValueError, match=r"model\.outer\.inner: unknown key\(s\) \['size'\] \(Inner"):
        build_config(Outer, {"name": "x", "inner": {"width": 1, "size": 2}}, "model.outer")
    with pytest.raises(ValueError, match=r"model\.outer: missing key\(s\) \['inner'\] \(Outer"):
        build_config(Outer, {"name": "x"}, "model.outer")


class _Wrapper(FreezableBackbone):
    def __init__(self, frozen: bool):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
        self.head = nn.Linear(3, 1)
        self.set_frozen(frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.grad_context():
            h = self.model(x)
        return self.head(h)


def test_frozen_backbone_stays_in_eval_and_gets_no_gradient():
    frozen = _Wrapper(frozen=True).train()
    assert frozen.training and frozen.head.training and not frozen.model.training
    assert not any(m.training for m in frozen.model.modules())
    assert not any(p.requires_grad for p in frozen.model.parameters())
    x = torch.ones(4, 3)
    torch.testing.assert_close(frozen(x), frozen(x))  # dropout off: deterministic
    frozen(x).sum().backward()
    assert all(p.grad is None for p in frozen.model.parameters())
    assert frozen.head.weight.grad is not None
    trainable = _Wrapper(frozen=False).train()
    assert trainable.model.training
    trainable(x).sum().backward()
    assert all(p.grad is not None for p in trainable.model[0].parameters())
    assert not _Wrapper(frozen=True).eval().train(False).training
