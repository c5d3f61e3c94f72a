"""Build the DramaDataModule from the `data` and `codec` config groups (Hydra `_target_`).

``prepare_data`` (rank 0 only) creates what is missing: the synthetic dataset when ``synth`` is
set and the root holds no drama, and cached tokens when ``items.load_tokens`` and
``tokenize_on_prepare``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

from isdrama.data.datamodule import DataConfig, DramaDataModule, LoaderConfig
from isdrama.data.dataset import ItemOptions
from isdrama.data.splits import DEFAULT_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION
from isdrama.data.text_tokenizer import PhoneTokenizer, Vocabulary
from isdrama.utils.config import build_config, to_plain

log = logging.getLogger(__name__)


def has_dramas(root: Path) -> bool:
    from isdrama.data.mrsdrama import find_drama_dirs

    return root.is_dir() and bool(find_drama_dirs(root))


def synthesize_if_missing(root: Path, synth: Mapping[str, Any]) -> None:
    """Write the synthetic dataset into ``root`` unless it already holds dramas."""
    if has_dramas(root):
        return
    from isdrama.data.synth.generator import SynthConfig, synthesize_dataset

    options = dict(synth)
    workers = int(options.pop("workers", 1))
    n = int(options.pop("dramas"))
    log.info("no dramas under %s: generating %d synthetic dramas", root, n)
    synthesize_dataset(root, build_config(SynthConfig, options, "data.synth", n_dramas=n), num_workers=workers)


def make_token_cache(root: Path, codec: Mapping[str, Any], device: str = "cpu"):
    """The TokenCache of ``root`` for this codec config (k-means-initialised codec when weights are random)."""
    from isdrama.data.tokenization import open_token_cache

    return open_token_cache(root, dict(codec), device=device)


class TokenCacheOpener:
    """Picklable zero-argument factory of the dataset's TokenCache (built in ``setup``)."""

    def __init__(self, root: Path, codec: Mapping[str, Any]):
        self.root, self.codec = Path(root), dict(codec)

    def __call__(self):
        return make_token_cache(self.root, self.codec)


class DatasetPreparer:
    """Picklable ``prepare_data`` step: synthesise a missing dataset, then fill the token cache
    and (with ``f0_cache``) the F0 targets."""

    def __init__(
        self,
        root: Path,
        synth: Optional[Mapping[str, Any]],
        tokenize: bool,
        codec: Optional[Mapping[str, Any]],
        f0_cache: Any = None,
    ):
        self.root, self.synth, self.tokenize = Path(root), synth, tokenize
        self.codec = None if codec is None else dict(codec)
        self.f0_cache = f0_cache

    def __call__(self) -> None:
        if self.synth:
            synthesize_if_missing(self.root, self.synth)
        if not has_dramas(self.root):
            raise FileNotFoundError(
                f"{self.root}: no dramas found. Generate a synthetic set with "
                f"`isdrama-data synth {self.root} --dramas 24` or point data.root at MRSDrama"
            )
        if self.tokenize:
            from isdrama.data.mrsdrama import load_dataset

            lines = load_dataset(self.root).lines
            cache = make_token_cache(self.root, self.codec)
            cache.tokenize(lines, progress=True)
            if self.f0_cache is not None:
                self.f0_cache.fill(lines, [cache.num_frames(line) for line in lines])


def build_datamodule(
    root: str,
    items: Mapping[str, Any],
    train: Mapping[str, Any],
    val: Mapping[str, Any],
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
    sets: Optional[list[str]] = None,
    cache_dir: Optional[str] = None,
    synth: Optional[Mapping[str, Any]] = None,
    tokenize_on_prepare: bool = True,
    content_tokenizer: Optional[Mapping[str, Any]] = None,
    codec: Optional[Mapping[str, Any]] = None,
    splits_file: Optional[str] = None,
    f0: Optional[Mapping[str, Any]] = None,
) -> DramaDataModule:
    """DramaDataModule from plain config values (see configs/data/synth_demo.yaml).

    ``f0``: pitch-tracker settings (:class:`~isdrama.metrics.speech.pitch.PitchConfig`) of the
    F0 targets (``items.load_f0``), cached by :class:`~isdrama.data.f0_cache.F0Cache`.
    """
    items_opts = build_config(ItemOptions, items, "data.items")
    config = DataConfig(
        root=str(root),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        sets=None if sets is None else list(sets),
        items=items_opts,
        train=build_config(LoaderConfig, train, "data.train"),
        val=build_config(LoaderConfig, val, "data.val"),
        cache_dir=cache_dir,
        splits_file=None if splits_file is None else str(splits_file),
    )
    root_path = Path(root)
    synth_opts = to_plain(synth)
    codec_opts = to_plain(codec)
    if items_opts.load_tokens and codec_opts is None:
        raise ValueError("data.items.load_tokens=true needs the codec config (pass codec=cfg.codec)")

    tokenizer = None
    if content_tokenizer:
        tokenizer = PhoneTokenizer(Vocabulary.default(), mode=to_plain(content_tokenizer).get("mode", "auto"))

    f0_cache = None
    if items_opts.load_f0:
        if f0 is None:
            raise ValueError("data.items.load_f0=true needs data.f0 (the pitch-tracker settings of the F0 targets)")
        from isdrama.data.f0_cache import F0Cache

        f0_cache = F0Cache(root_path, to_plain(f0), items_opts.frame_rate)
    token_loader = TokenCacheOpener(root_path, codec_opts) if items_opts.load_tokens else None
    prepare = DatasetPreparer(
        root_path, synth_opts, items_opts.load_tokens and tokenize_on_prepare, codec_opts, f0_cache=f0_cache
    )
    return DramaDataModule(
        config,
        token_loader=token_loader,
        tokenizer=tokenizer,
        prepare=prepare,
        lazy_token_loader=True,
        f0_loader=None if f0_cache is None else f0_cache.load,
    )


__all__ = ["build_datamodule", "synthesize_if_missing", "make_token_cache", "has_dramas"]
