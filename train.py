"""Train isdrama models with Hydra + Lightning.

    python train.py                                   # demo: pose pre-training on synthetic data, CPU
    python train.py experiment=pose_pretrain          # Multimodal Pose Encoder pre-training
    python train.py trainer=gpu data=mrsdrama         # real MRSDrama on one GPU
    python train.py trainer=ddp trainer.devices=8     # multi-GPU; add trainer.num_nodes=N on a cluster
    python train.py logger=none debug=fast            # smoke test, no logging

All options: `python train.py --help` and configs/.
"""

import hydra
from omegaconf import DictConfig

from isdrama.training import run_training


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    run_training(cfg)


if __name__ == "__main__":
    main()
