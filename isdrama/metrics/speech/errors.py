"""Exceptions shared by the speech metrics.

`MetricUnavailable` means "this metric cannot be computed here" (a backend package or its
model weights are missing); the evaluation pipeline catches it, skips the metric and reports
the message. `InvalidAudio` means the caller passed audio that cannot be scored (empty, NaN,
wrong shape); it is a bug in the input, not in the environment, and should not be skipped.
"""

from __future__ import annotations


class MetricUnavailable(RuntimeError):
    """A metric backend (package or model weights) is not available on this machine.

    Attributes:
        metric: the metric that cannot be computed ("cer", "sim", "ffe").
        backend: the backend that was asked for (e.g. "faster_whisper", "wavlm").
    """

    def __init__(self, metric: str, backend: str, reason: str) -> None:
        self.metric = metric
        self.backend = backend
        self.reason = reason
        super().__init__(f"{metric} unavailable (backend {backend!r}): {reason}")


class InvalidAudio(ValueError):
    """Audio that cannot be scored: empty, non-finite, wrong rank or bad sample rate."""


class InvalidText(ValueError):
    """A reference transcript that is empty after normalisation (nothing to score against)."""
