"""Generate a binaural drama from a drama script (speakers with prompt recordings, lines with
trajectory / pose-file / text / video pose prompts) with Hydra overrides, like train.py.

    python infer.py script=examples/three_speakers.yaml                  # demo checkpoints
    python infer.py script=S.yaml checkpoint=OUTPUT/drama/drama-last.pt out=outputs/my_drama
    python infer.py script=S.yaml dry_run=true                           # validate only
    python infer.py script=S.yaml generation.steps=32 generation.guidance_scale=2 device=cuda

Options: configs/infer.yaml; the script format: docs/drama-script.md. The same without Hydra:
`isdrama-infer S.yaml --checkpoint CKPT --out DIR`, or `DramaGenerator` in Python.
"""

import sys

import hydra
from omegaconf import DictConfig

from isdrama.inference.run import run_infer


@hydra.main(version_base="1.3", config_path="configs", config_name="infer")
def main(cfg: DictConfig) -> None:
    code = run_infer(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
