"""Synthetic MRSDrama generator: espeak-ng speech, measured-HRIR binaural rendering of moving
talkers, geometric pose, text pose prompts and a fixed-camera video, in the real layout.

Entry points: ``synthesize_dataset(out_root, SynthConfig(...), num_workers)`` and the
``isdrama-data synth`` subcommand (``isdrama.data.synth.cli``).
"""

from isdrama.data.synth.generator import SynthConfig, SynthError, summarize, synthesize_dataset

__all__ = ["SynthConfig", "SynthError", "summarize", "synthesize_dataset"]
