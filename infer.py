"""Generate a binaural drama from a script + speaker prompts + pose prompts.

Not built yet: generation needs the Immersive Drama Transformer (flow matching over binaural
EnCodec latents), which is its own milestone. Until then this entry point says so instead of
pretending; `isdrama-data resynth` gives the codec round trip of dataset lines for evaluation.
"""

import sys

MESSAGE = (
    "infer.py: drama generation is not built yet. It needs the Immersive Drama Transformer "
    "(isdrama.models.drama_transformer), which lands with its own issue. Available now: "
    "`isdrama-data resynth ROOT OUT` (codec round trip of dataset lines) and `isdrama-eval`."
)


def main() -> int:
    print(MESSAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
