"""isdrama: immersive spatial drama generation (binaural multi-speaker speech)."""

__version__ = "0.1.0"
