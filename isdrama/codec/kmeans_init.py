"""Codebook initialisation by k-means on encoder outputs.

Without pretrained weights EnCodec's RVQ codebooks are all zeros (``inited`` = 0) and every
token is 0. EnCodec initialises them by k-means on the first training batch (a forward in train
mode); this module does the same deliberately, on as much audio as you give it: encode the
audio, cluster the latent frames for RVQ layer 1, subtract the nearest centroid, cluster the
residual for layer 2, and so on for the n_q layers in use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

import torch
from einops import rearrange
from tqdm import tqdm

from isdrama.codec.binaural import BinauralCodec
from isdrama.codec.config import KMeansConfig

AudioSource = Union[torch.Tensor, Iterable[torch.Tensor]]


@dataclass
class KMeansReport:
    """What the initialisation did.

    residual_energy[l]: mean squared residual after layers 0..l relative to the latent's variance
    around its per-channel mean (1.0 = no more than the mean explained); used_codes[l]: centroids
    that own at least one frame.
    """

    n_frames: int
    n_layers: int
    residual_energy: list[float] = field(default_factory=list)
    used_codes: list[int] = field(default_factory=list)

    def format(self) -> str:
        energy = ", ".join(f"{e:.3g}" for e in self.residual_energy)
        used = ", ".join(str(u) for u in self.used_codes)
        return (
            f"k-means codebook init on {self.n_frames} latent frames, {self.n_layers} RVQ layer(s); "
            f"relative residual energy after each layer: [{energy}]; codes in use: [{used}]"
        )


def nearest(samples: torch.Tensor, centroids: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Index of the nearest centroid (Euclidean) for each sample: (N, D), (K, D) -> (N,) long."""
    c_sq = centroids.pow(2).sum(dim=1)
    out = []
    for chunk in samples.split(chunk_size):
        dist = c_sq.unsqueeze(0) - 2.0 * chunk @ centroids.T  # |x|^2 is constant per row
        out.append(dist.argmin(dim=1))
    return torch.cat(out) if out else samples.new_zeros(0, dtype=torch.long)


def kmeans(
    samples: torch.Tensor, n_clusters: int, n_iters: int, generator: torch.Generator, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means: samples (N, D) -> (centroids (K, D), cluster sizes (K,)).

    Initial centroids are random samples (with replacement only when N < K); an empty cluster
    keeps its previous centroid, as in EnCodec's ``core_vq.kmeans``.
    """
    n, dim = samples.shape
    if n == 0:
        raise ValueError("k-means needs at least one latent frame")
    if n >= n_clusters:
        idx = torch.randperm(n, generator=generator)[:n_clusters]
    else:
        idx = torch.randint(0, n, (n_clusters,), generator=generator)
    centroids = samples[idx.to(samples.device)].clone()
    counts = torch.zeros(n_clusters, dtype=samples.dtype, device=samples.device)
    for _ in range(n_iters):
        assign = nearest(samples, centroids, chunk_size)
        counts = torch.bincount(assign, minlength=n_clusters).to(samples.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, samples)
        filled = counts > 0
        centroids = torch.where(filled.unsqueeze(1), sums / counts.clamp(min=1).unsqueeze(1), centroids)
    assign = nearest(samples, centroids, chunk_size)
    counts = torch.bincount(assign, minlength=n_clusters).to(samples.dtype)
    return centroids, counts


def _iter_batches(audio: AudioSource) -> Iterable[torch.Tensor]:
    if isinstance(audio, torch.Tensor):
        yield audio if audio.dim() == 3 else audio.unsqueeze(0)
        return
    for item in audio:
        item = torch.as_tensor(item)
        yield item if item.dim() == 3 else item.unsqueeze(0)


def collect_latent_frames(
    codec: BinauralCodec, audio: AudioSource, max_frames: int, generator: torch.Generator
) -> torch.Tensor:
    """Encoder outputs of ``audio`` as frames (N, D), N <= max_frames (seeded subset beyond).

    ``audio``: a tensor (B, 2, S) or an iterable of (2, S) / (B, 2, S) tensors, all at
    ``codec.sample_rate``. Both halves of each binaural frame (both ears, or both packed EnCodec
    frames of the stereo model) become separate frames: they share one set of codebooks.
    """
    frames = []
    for wav in _iter_batches(audio):
        latent = codec.encoder_latent(wav)  # (B, 2D, T)
        frames.append(rearrange(latent, "b (h d) t -> (b h t) d", h=2).float())
    if not frames:
        raise ValueError("k-means init got no audio")
    samples = torch.cat(frames)
    if samples.shape[0] > max_frames:
        keep = torch.randperm(samples.shape[0], generator=generator)[:max_frames]
        samples = samples[keep.to(samples.device)]
    return samples


@torch.no_grad()
def init_codebooks_kmeans(
    codec: BinauralCodec,
    audio: AudioSource,
    config: Optional[KMeansConfig] = None,
    n_layers: Optional[int] = None,
    progress: bool = False,
) -> KMeansReport:
    """Initialise the codec's first ``n_layers`` (default: n_q) RVQ codebooks by k-means, in place.

    Layer l is clustered on the residual left by layers 0..l-1 (nearest-code assignment, as RVQ
    encodes). Buffers are set so that EnCodec's EMA training can continue from them:
    ``embed`` = centroids, ``cluster_size`` = frames per centroid, ``embed_avg`` = embed x
    cluster_size (EnCodec's EMA keeps embed = embed_avg / cluster_size), ``inited`` = 1.
    Changes ``codec.config_key()``; save the result with ``codec.save(path)``. ``progress``
    shows a bar over the layers.
    """
    config = config or codec.config.kmeans
    n_layers = codec.n_q if n_layers is None else int(n_layers)
    layers = codec.model.quantizer.vq.layers
    if not 1 <= n_layers <= len(layers):
        raise ValueError(f"n_layers must be in [1, {len(layers)}], got {n_layers}")
    generator = torch.Generator().manual_seed(config.seed)
    samples = collect_latent_frames(codec, audio, config.max_frames, generator)
    report = kmeans_init_layers(layers[:n_layers], samples, config.n_iters, config.chunk_size, generator, progress)
    if not codec.weights_source.endswith("+kmeans"):
        codec.weights_source += "+kmeans"
    return report


@torch.no_grad()
def kmeans_init_layers(
    layers: Iterable, samples: torch.Tensor, n_iters: int, chunk_size: int, generator: torch.Generator, progress: bool
) -> KMeansReport:
    """k-means-initialise EnCodec RVQ ``layers`` (``VectorQuantization`` modules) in place on latent
    frames ``samples`` (N, D): layer l on the residual left by layers 0..l-1 (see
    :func:`init_codebooks_kmeans`; the codec training stage calls this when it turns the quantiser on)."""
    layers = list(layers)
    samples = samples.float()
    total_energy = (samples - samples.mean(dim=0)).pow(2).mean().clamp(min=1e-12)
    report = KMeansReport(n_frames=int(samples.shape[0]), n_layers=len(layers))
    residual = samples
    for layer in tqdm(layers, desc="k-means RVQ layers", unit="layer", disable=not progress):
        book = layer._codebook
        centroids, counts = kmeans(residual, book.codebook_size, n_iters, generator, chunk_size)
        book.embed.data.copy_(centroids)
        book.cluster_size.data.copy_(counts)
        book.embed_avg.data.copy_(centroids * counts.unsqueeze(1))
        book.inited.data.fill_(1.0)
        residual = residual - centroids[nearest(residual, centroids, chunk_size)]
        report.residual_energy.append(float(residual.pow(2).mean() / total_energy))
        report.used_codes.append(int((counts > 0).sum()))
    return report
