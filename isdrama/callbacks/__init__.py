"""Lightning callbacks: validation on generated audio (metrics, audio and figure logging).

The training stage implements :class:`ValidationAudioGenerator` (``generate_validation_audio``).
"""

from isdrama.callbacks.generation import GENERATE_METHOD, GeneratedAudio, ValidationAudioGenerator
from isdrama.callbacks.validation_audio import ValidationAudioCallback

__all__ = ["GENERATE_METHOD", "GeneratedAudio", "ValidationAudioCallback", "ValidationAudioGenerator"]
