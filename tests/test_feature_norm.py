"""Per-channel standardisation of frozen backbone features (isdrama.models.feature_norm)."""

from __future__ import annotations

import pytest
import torch

from isdrama.models.feature_norm import FeatureStandardizer


def test_moments_in_parts_equal_direct_statistics_and_masking():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(50, 6, generator=g) * torch.tensor([1e-3, 1.0, 5.0, 0.1, 2.0, 3.0]) + 7.0
    norm = FeatureStandardizer(6)
    with pytest.raises(RuntimeError, match="before fit"):
        norm(rows[None])
    norm.fit_moments([FeatureStandardizer.moments(rows[:17]), FeatureStandardizer.moments(rows[17:])])
    torch.testing.assert_close(norm.mean, rows.double().mean(0).float())
    torch.testing.assert_close(norm.std, rows.double().std(0, unbiased=False).float(), rtol=1e-4, atol=1e-7)
    x = rows.view(5, 10, 6)
    mask = torch.arange(10)[None] < torch.tensor([10, 3, 7, 1, 10])[:, None]
    y = norm(x, mask)
    assert float(y[~mask].abs().max()) == 0.0
    torch.testing.assert_close(y[mask], (x[mask] - norm.mean) / norm.std)
    # after standardisation every channel of the fitted rows has mean 0 and std 1
    z = norm(rows[None])[0]
    torch.testing.assert_close(z.mean(0), torch.zeros(6), atol=1e-3, rtol=0)  # float32 of 7 + 1e-3 x
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(6), atol=1e-3, rtol=0)


def test_state_dict_round_trip_and_errors():
    norm = FeatureStandardizer(3)
    norm.fit_moments([FeatureStandardizer.moments(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 5.0]]))])
    other = FeatureStandardizer(3)
    assert not other.is_fitted
    other.load_state_dict(norm.state_dict())
    assert other.is_fitted
    torch.testing.assert_close(other.mean, torch.tensor([2.0, 2.0, 4.0]))
    torch.testing.assert_close(other.std, torch.tensor([1.0, 1e-6, 1.0]))  # constant channel: eps floor
    with pytest.raises(ValueError, match="fewer than 2"):
        FeatureStandardizer(3).fit_moments([FeatureStandardizer.moments(torch.ones(1, 3))])
    with pytest.raises(ValueError, match="fewer than 2"):
        FeatureStandardizer(3).fit_moments([])
