"""Content path: phone tokens -> encoder -> duration predictor + length regulator -> z_c.

``ContentEncoder`` turns padded token ids (B, L) into frame-level content ``z_c`` (B, T, D) at
the codec frame rate (``config.frame_rate``). Training passes
ground-truth token durations in frames (from :class:`~isdrama.data.text_tokenizer.PhoneTokenizer`
``encode_words``); inference predicts them, optionally constrained to an exact total per line.
The vocabulary travels inside the module's state dict (``get_extra_state``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from isdrama.data.text_tokenizer import PhoneTokenizer, TokenizedLine, Vocabulary
from isdrama.models.layers import (
    ConvStack,
    FreezableBackbone,
    SinusoidalEncoding,
    Transformer,
    check_mask,
    masked_fill_invalid,
)


@dataclass
class ContentEncoderConfig:
    """Hyper-parameters of :class:`ContentEncoder`; the values live in configs/model/content/*.yaml
    (no defaults here).

    Attributes:
        d_model: token/frame width D.
        n_layers: FastSpeech FFT blocks (self-attention + conv feed-forward).
        n_heads: attention heads.
        ff_mult: feed-forward hidden = ff_mult * d_model.
        ff_kernel: kernel of the conv feed-forward.
        dropout: dropout in the encoder.
        frame_rate: output frames per second (the codec's frame rate).
        tokenizer_mode: ``auto`` | ``char`` | ``byte`` (see :mod:`isdrama.data.text_tokenizer`).
        dp_channels: duration-predictor width.
        dp_layers: duration-predictor conv layers.
        dp_kernel: duration-predictor kernel.
        dp_dropout: duration-predictor dropout.
        dp_detach: stop gradients from the duration loss into the encoder.
        log_offset: the predictor regresses log(frames + log_offset).
        semantic_model: hub id or local folder of a BERT-family model whose word features are
            added to the token embeddings; None disables it.
        semantic_freeze: keep the semantic model frozen (eval mode, no grad).
    """

    d_model: int
    n_layers: int
    n_heads: int
    ff_mult: float
    ff_kernel: int
    dropout: float
    frame_rate: float
    tokenizer_mode: str
    dp_channels: int
    dp_layers: int
    dp_kernel: int
    dp_dropout: float
    dp_detach: bool
    log_offset: float
    semantic_model: Optional[str]
    semantic_freeze: bool


# ------------------------------------------------------------------------------ durations
class DurationPredictor(nn.Module):
    """FastSpeech duration predictor: conv stack -> linear -> log(frames + offset).

    (B, L, D) tokens, mask (B, L) -> (B, L) log durations (0 at padding).
    """

    def __init__(self, in_dim: int, channels: int, n_layers: int, kernel_size: int, dropout: float):
        super().__init__()
        self.convs = ConvStack(
            in_dim, channels, n_blocks=max(n_layers - 1, 0), kernel_size=kernel_size, dropout=dropout
        )
        self.out = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = F.gelu(self.convs(x, mask))
        return masked_fill_invalid(self.out(h).squeeze(-1), mask)


def duration_loss(
    log_pred: torch.Tensor, durations: torch.Tensor, mask: torch.Tensor, log_offset: float = 1.0
) -> torch.Tensor:
    """Masked MSE between predicted log durations (B, L) and log(frames + offset) (B, L)."""
    target = torch.log(durations.to(log_pred.dtype) + log_offset)
    m = mask.to(log_pred.dtype)
    return ((log_pred - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def _round_by_cumsum(frames: torch.Tensor) -> torch.Tensor:
    """Real-valued frames (B, L) -> integers (B, L) whose prefix sums are the rounded prefix
    sums, so each row's total is its rounded total."""
    ends = torch.round(frames.to(torch.float64).cumsum(dim=-1)).to(torch.long)
    return torch.diff(ends, dim=-1, prepend=torch.zeros_like(ends[:, :1]))


def durations_from_log(
    log_pred: torch.Tensor,
    mask: torch.Tensor,
    total_frames: Optional[torch.Tensor] = None,
    log_offset: float = 1.0,
    speed: float = 1.0,
) -> torch.Tensor:
    """Predicted log durations (B, L) -> integer frames (B, L), 0 at padding.

    Without ``total_frames`` the real-valued durations (divided by ``speed``) are rounded by
    cumulative sums. With ``total_frames`` (B,) they are scaled so that each row sums to it
    exactly (a row predicted all-zero is spread evenly over its valid tokens).
    """
    d = (torch.exp(log_pred.to(torch.float64)) - log_offset).clamp_min(0.0)
    d = d * mask.to(d.dtype)
    if total_frames is None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        return _round_by_cumsum(d / speed)
    total = total_frames.to(torch.float64).reshape(-1)
    if total.shape[0] != d.shape[0]:
        raise ValueError(f"total_frames must have shape ({d.shape[0]},), got {tuple(total_frames.shape)}")
    if (total < 0).any():
        raise ValueError("total_frames must be >= 0")
    s = d.sum(dim=-1, keepdim=True)
    uniform = mask.to(d.dtype)
    d = torch.where(s > 0, d, uniform)
    d = d * (total[:, None] / d.sum(dim=-1, keepdim=True).clamp_min(1e-12))
    out = _round_by_cumsum(d)
    return out


# ------------------------------------------------------------------------ length regulator
def length_regulate(
    x: torch.Tensor, durations: torch.Tensor, n_frames: Optional[int] = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Repeat each token's vector by its duration.

    Args:
        x: (B, L, D) token vectors.
        durations: (B, L) integer frames (0 at padding).
        n_frames: output length T (default: the longest total). A row whose total exceeds it
            is an error.

    Returns:
        frames (B, T, D) (zero at padding), frame_mask (B, T) True valid, and
        frame_token_index (B, T) the source token of each frame (0 at padding).
    """
    if durations.shape != x.shape[:2]:
        raise ValueError(f"durations shape {tuple(durations.shape)} must match tokens {tuple(x.shape[:2])}")
    durations = durations.to(torch.long)
    if (durations < 0).any():
        raise ValueError("durations must be >= 0")
    ends = durations.cumsum(dim=-1)  # (B, L)
    totals = ends[:, -1] if ends.shape[1] else torch.zeros_like(ends[:, 0])
    max_total = int(totals.max().item()) if totals.numel() else 0
    T = max_total if n_frames is None else int(n_frames)
    if max_total > T:
        raise ValueError(f"durations sum to {max_total} frames, more than n_frames={T}")
    steps = torch.arange(T, device=x.device).expand(x.shape[0], T).contiguous()
    index = torch.searchsorted(ends, steps, right=True).clamp_max(max(x.shape[1] - 1, 0))
    frame_mask = steps < totals[:, None]
    index = index.masked_fill(~frame_mask, 0)
    frames = torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))
    return masked_fill_invalid(frames, frame_mask), frame_mask, index


#: width of :func:`frame_position_features`: 3 for the token, 3 for the word
POSITION_FEATURES = 6


def span_position_features(spans: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Where each frame sits inside its span (Parallel Tacotron's token-position features).

    spans (B, N) integer frames of consecutive spans (tokens or words) tiling each line from frame
    0 (0 at padding) -> (B, n_frames, 3): ``2 r - 1`` and ``sin(pi r)`` with r = (frames since the
    span's start + 0.5) / its length in (0, 1), and ``log(length) / log(64)``; zero past a line's
    last span.
    """
    d = spans.to(torch.long)
    ends = d.cumsum(dim=-1)
    steps = torch.arange(n_frames, device=d.device).expand(d.shape[0], n_frames).contiguous()
    idx = torch.searchsorted(ends, steps, right=True).clamp_max(max(d.shape[1] - 1, 0))
    length = d.gather(1, idx).clamp_min(1).to(torch.float32)
    offset = steps - (ends - d).gather(1, idx)
    r = (offset.to(torch.float32) + 0.5) / length
    feats = torch.stack([2 * r - 1, torch.sin(math.pi * r), torch.log(length) / math.log(64.0)], dim=-1)
    return masked_fill_invalid(feats, steps < ends[:, -1:])


def frame_position_features(token_frames: torch.Tensor, word_frames: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(B, n_frames, 6): :func:`span_position_features` of the tokens (B, L) then of the words
    (B, W). z_c repeats one vector over a token's frames, and English tokens (characters) carry no
    word boundary: these tell a token's frames apart and mark where words begin and end."""
    return torch.cat(
        [span_position_features(token_frames, n_frames), span_position_features(word_frames, n_frames)], dim=-1
    )


def word_frames_of_tokens(token_frames: torch.Tensor, word_index: torch.Tensor) -> torch.Tensor:
    """Token frames (B, L) (0 at padding) summed per word: word_index (B, L), each token's word
    (ascending from 0) -> (B, W) frames per word."""
    n_words = int(word_index.max()) + 1 if word_index.numel() else 0
    out = token_frames.new_zeros(token_frames.shape[0], n_words)
    return out.scatter_add(1, word_index.to(torch.long), token_frames)


# ------------------------------------------------------------------------ semantic features
class SemanticFeatures(FreezableBackbone):
    """Word features from a BERT-family model (transformers), gathered onto tokens.

    Args:
        name_or_path: hub id (needs the hub cache offline) or a local folder holding a model
            and its tokenizer (``save_pretrained`` layout).
        freeze: eval mode and no gradients for the language model.
    """

    def __init__(self, name_or_path: str, freeze: bool = True):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModel.from_pretrained(name_or_path)
        except OSError as err:
            raise OSError(
                f"semantic_model '{name_or_path}': could not load a tokenizer and "
                f"model (a hub id needs network or a filled cache; HF_HUB_OFFLINE is "
                f"usually set): {err}"
            ) from err
        self.set_frozen(freeze)
        self.dim = int(self.model.config.hidden_size)

    def forward(
        self, words: Sequence[Sequence[str]], word_index: torch.Tensor, token_mask: torch.Tensor
    ) -> torch.Tensor:
        """words: B word lists; word_index (B, L) word of each token -> (B, L, H)."""
        if len(words) != word_index.shape[0]:
            raise ValueError(f"got {len(words)} word lists for a batch of {word_index.shape[0]}")
        device = word_index.device
        enc = self.tokenizer(
            [list(w) for w in words], is_split_into_words=True, padding=True, truncation=True, return_tensors="pt"
        )
        with self.grad_context():
            hidden = self.model(
                input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device)
            ).last_hidden_state  # (B, S, H)
        n_words = max(1, int(word_index.max().item()) + 1)
        pooled = hidden.new_zeros(hidden.shape[0], n_words, hidden.shape[-1])
        counts = hidden.new_zeros(hidden.shape[0], n_words, 1)
        for b in range(hidden.shape[0]):
            ids = torch.tensor([-1 if w is None else w for w in enc.word_ids(b)], device=device)
            keep = (ids >= 0) & (ids < n_words)
            pooled[b].index_add_(0, ids[keep], hidden[b, keep])
            counts[b].index_add_(0, ids[keep], torch.ones_like(hidden[b, keep, :1]))
        pooled = pooled / counts.clamp_min(1.0)  # words cut by truncation get zeros
        index = word_index.clamp(0, n_words - 1)
        feats = torch.gather(pooled, 1, index[..., None].expand(-1, -1, pooled.shape[-1]))
        return masked_fill_invalid(feats, token_mask)


# ------------------------------------------------------------------------------ the encoder
class ContentEncoder(nn.Module):
    """Tokens -> encoder -> durations -> frame-level content z_c.

    Args:
        config: :class:`ContentEncoderConfig`.
        vocab: token vocabulary (default :meth:`Vocabulary.default`); saved in the state dict.
    """

    def __init__(self, config: ContentEncoderConfig, vocab: Optional[Vocabulary] = None):
        super().__init__()
        self.config = cfg = config
        if cfg.frame_rate <= 0:
            raise ValueError(f"frame_rate must be > 0, got {cfg.frame_rate}")
        self.vocab = vocab if vocab is not None else Vocabulary.default()
        self.embed = nn.Embedding(len(self.vocab), cfg.d_model, padding_idx=self.vocab.pad_id)
        self.positions = SinusoidalEncoding(cfg.d_model)
        self.semantic = None
        if cfg.semantic_model:
            self.semantic = SemanticFeatures(cfg.semantic_model, cfg.semantic_freeze)
            self.semantic_proj = nn.Linear(self.semantic.dim, cfg.d_model)
        self.encoder = Transformer(
            cfg.d_model,
            cfg.n_layers,
            cfg.n_heads,
            cfg.ff_mult,
            cfg.ff_kernel,
            cross_attention=False,
            dropout=cfg.dropout,
        )
        self.duration_predictor = DurationPredictor(
            cfg.d_model, cfg.dp_channels, cfg.dp_layers, cfg.dp_kernel, cfg.dp_dropout
        )

    # vocabulary ------------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def tokenizer(self) -> PhoneTokenizer:
        """A tokenizer bound to this model's vocabulary and mode."""
        return PhoneTokenizer(self.vocab, self.config.tokenizer_mode)

    def get_extra_state(self) -> dict:
        return {"vocabulary": self.vocab.state_dict(), "config": asdict(self.config)}

    def set_extra_state(self, state: dict) -> None:
        vocab = Vocabulary.from_state_dict(state["vocabulary"], "checkpoint vocabulary")
        if len(vocab) != self.embed.num_embeddings:
            raise ValueError(
                f"checkpoint vocabulary has {len(vocab)} tokens but this model's "
                f"embedding has {self.embed.num_embeddings}; build the model with "
                f"the checkpoint's vocabulary (ContentEncoder.vocab_from_state_dict)"
            )
        self.vocab = vocab

    @staticmethod
    def vocab_from_state_dict(state_dict: dict, prefix: str = "") -> Vocabulary:
        """The vocabulary stored in a state dict (to build a matching model before loading)."""
        key = prefix + "_extra_state"
        if key not in state_dict:
            raise KeyError(f"state dict has no '{key}' (no ContentEncoder vocabulary)")
        return Vocabulary.from_state_dict(state_dict[key]["vocabulary"], f"state dict [{key}]")

    def prepare(
        self, words: Sequence[str], word_durations: Optional[Sequence[float]] = None, total_frames: Optional[int] = None
    ) -> TokenizedLine:
        """Words (+ seconds) -> token ids and frame durations at this model's frame rate."""
        return self.tokenizer.encode_words(words, word_durations, self.frame_rate, total_frames)

    # forward ---------------------------------------------------------------------------------
    def encode_tokens(
        self,
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        words: Optional[Sequence[Sequence[str]]] = None,
        word_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """tokens (B, L) long, token_mask (B, L) -> token hidden states (B, L, D)."""
        check_mask(token_mask, tuple(tokens.shape), "token_mask")
        if tokens.numel() and (int(tokens.max()) >= len(self.vocab) or int(tokens.min()) < 0):
            raise ValueError(
                f"token ids must be in [0, {len(self.vocab)}), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        h = self.embed(tokens.masked_fill(~token_mask, self.vocab.pad_id))
        pos = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        h = h + self.positions(pos).to(h.dtype)
        if self.semantic is not None:
            if words is None or word_index is None:
                raise ValueError("semantic_model is set: pass words (B word lists) and word_index (B, L)")
            h = h + self.semantic_proj(self.semantic(words, word_index, token_mask))
        return self.encoder(h, token_mask)

    def forward(
        self,
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        durations: Optional[torch.Tensor] = None,
        total_frames: Optional[torch.Tensor] = None,
        n_frames: Optional[int] = None,
        words: Optional[Sequence[Sequence[str]]] = None,
        word_index: Optional[torch.Tensor] = None,
        speed: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Encode tokens and expand them to frames.

        Args:
            tokens: (B, L) token ids; token_mask: (B, L) bool, True valid.
            durations: (B, L) ground-truth frames per token (training); None to predict.
            total_frames: (B,) exact frame count per line when predicting (e.g. the pose or
                video span at the frame rate); ignored when ``durations`` is given.
            n_frames: pad the output to this length T (e.g. the target's codec frames).
            words, word_index: only with ``semantic_model`` (B word lists, (B, L)).
            speed: predicted durations are divided by it (no effect with ``total_frames``).

        Returns a dict:
            ``z_c`` (B, T, D), ``frame_mask`` (B, T), ``frame_token_index`` (B, T),
            ``token_hidden`` (B, L, D), ``token_mask`` (B, L), ``log_duration`` (B, L)
            predicted, ``durations`` (B, L) frames used, and ``duration_loss`` (scalar) when
            ``durations`` were given.
        """
        h = self.encode_tokens(tokens, token_mask, words, word_index)
        dp_in = h.detach() if self.config.dp_detach else h
        log_dur = self.duration_predictor(dp_in, token_mask)
        out: dict[str, torch.Tensor] = {"token_hidden": h, "token_mask": token_mask, "log_duration": log_dur}
        if durations is not None:
            if durations.shape != tokens.shape:
                raise ValueError(f"durations must have shape {tuple(tokens.shape)}, got {tuple(durations.shape)}")
            used = durations.to(torch.long).masked_fill(~token_mask, 0)
            out["duration_loss"] = duration_loss(log_dur, used, token_mask, self.config.log_offset)
        else:
            used = durations_from_log(log_dur.detach(), token_mask, total_frames, self.config.log_offset, speed)
        z_c, frame_mask, frame_token_index = length_regulate(h, used, n_frames)
        out.update(z_c=z_c, frame_mask=frame_mask, frame_token_index=frame_token_index, durations=used)
        return out
