"""Inference: drama scripts -> binaural dramas (:class:`DramaGenerator`), batch generation over
dataset splits, the cascade baseline and the results table."""

from isdrama.inference.generator import Drama, DramaGenerator, GenerationSettings, default_settings
from isdrama.inference.script import DramaScript, ScriptError, load_script

__all__ = [
    "Drama",
    "DramaGenerator",
    "DramaScript",
    "GenerationSettings",
    "ScriptError",
    "default_settings",
    "load_script",
]
