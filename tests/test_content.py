"""Content path: tokenizer, vocabulary, durations, length regulator, ContentEncoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_configs import model_config

from isdrama.data.text_tokenizer import (
    SIL_TOKEN,
    PhoneTokenizer,
    Vocabulary,
    byte_token,
    collate_lines,
    seconds_to_frames,
    split_word_frames,
    word_to_token_frames,
)
from isdrama.models.content import (
    POSITION_FEATURES,
    ContentEncoder,
    ContentEncoderConfig,
    duration_loss,
    durations_from_log,
    frame_position_features,
    length_regulate,
    span_position_features,
    word_frames_of_tokens,
)

#: explicit sizes on top of configs/model/content (tiny)
TINY = dict(d_model=32, n_layers=1, n_heads=2, ff_kernel=3, dp_channels=32, dropout=0.0, dp_dropout=0.0)


def tiny_config(**kw) -> ContentEncoderConfig:
    return ContentEncoderConfig(**model_config("content", **{**TINY, **kw}))


def tiny_encoder(seed: int = 0, **kw) -> ContentEncoder:
    torch.manual_seed(seed)
    return ContentEncoder(tiny_config(**kw))


# ------------------------------------------------------------------------------ tokenizer
def test_mandarin_pinyin_phones_with_tones():
    tok = PhoneTokenizer()
    assert tok.tokenize_word("北京") == ["b", "ei3", "j", "ing1"]
    assert tok.tokenize_word("吧") == ["b", "a5"]  # neutral tone = 5
    assert tok.tokenize_word("女") == ["n", "v3"]  # ü written v
    assert tok.tokenize_word("一") == ["i1"]  # no initial (strict pinyin)
    assert tok.tokenize_word("好，") == ["h", "ao3", ","]  # CJK punctuation normalised


def test_other_scripts_chars_and_byte_fallback():
    tok = PhoneTokenizer()
    assert tok.tokenize_word("Hi!") == ["h", "i", "!"]
    assert tok.tokenize_word("é") == [byte_token(0xC3), byte_token(0xA9)]
    ids = tok.vocab.encode(tok.tokenize_word("Ωmega🙂"))
    assert tok.vocab.unk_id not in ids  # bytes, never <UNK>
    assert PhoneTokenizer(mode="byte").tokenize_word("北a") == [byte_token(b) for b in "北a".encode()]
    assert PhoneTokenizer(mode="char").tokenize_word("Ab") == ["a", "b"]
    with pytest.raises(ValueError, match="mode"):
        PhoneTokenizer(mode="espeak")


def test_words_special_and_empty_words_keep_a_token():
    tok = PhoneTokenizer()
    tokens, counts = tok.tokenize_words(["你好", "<SP>", "  ", "ok"])
    assert counts == [4, 1, 1, 2]
    assert tokens[4] == SIL_TOKEN and tokens[5] == SIL_TOKEN
    line = tok.encode_words(["你好", "<SP>"], [0.4, 0.2], frame_rate=75.0)
    assert line.word_index.tolist() == [0, 0, 0, 0, 1]
    assert line.ids[-1] == tok.vocab.sil_id
    assert line.durations.sum() == round(0.6 * 75)


def test_vocabulary_ids_and_round_trips(tmp_path):
    v = Vocabulary.default()
    assert (v.pad_id, v.unk_id, v.sil_id) == (0, 1, 2)
    assert v.encode(["zzz-not-a-token"]) == [v.unk_id]
    assert v.decode(v.encode(["b", "ei3"])) == ["b", "ei3"]
    ext = v.extended(["<AP>", "b"])
    assert len(ext) == len(v) + 1 and ext.encode(["<AP>"]) == [len(v)]
    assert Vocabulary.from_json(ext.to_json()) == ext
    assert Vocabulary.from_state_dict(ext.state_dict()) == ext
    ext.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == ext
    bad = ext.state_dict() | {"tokens": ["a", "b"]}
    with pytest.raises(ValueError, match="tokens"):
        Vocabulary.from_state_dict(bad)


# ------------------------------------------------------------------------------ durations
def test_seconds_to_frames_preserves_totals():
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = rng.uniform(0, 0.4, size=rng.integers(1, 30))
        rate = float(rng.choice([75.0, 50.0, 187.5, 86.1328125]))
        frames = seconds_to_frames(d, rate)
        assert frames.min() >= 0
        assert frames.sum() == int(np.round(d.sum() * rate))
        # each boundary is within half a frame of the exact time
        assert np.abs(np.cumsum(frames) - np.cumsum(d) * rate).max() <= 0.5 + 1e-9
        total = int(rng.integers(1, 100))
        assert seconds_to_frames(d, rate, total_frames=total).sum() == total
    assert seconds_to_frames([0.0, 0.0, 0.0], 75.0, total_frames=7).tolist() == [2, 3, 2]


def test_word_durations_split_over_tokens():
    frames = word_to_token_frames([0.35, 0.1], [3, 1], frame_rate=60.0)
    assert frames.tolist() == [7, 7, 7, 6]
    assert word_to_token_frames([0.4, 0.1], [4, 1], 75.0, total_frames=40).sum() == 40
    with pytest.raises(ValueError):
        word_to_token_frames([0.4], [1, 2], 75.0)
    split = split_word_frames([7, 0, 5], [3, 1, 2])
    assert split.tolist() == [2, 3, 2, 0, 2, 3]
    # data-module hook: (words, word frames, language) -> ids, token frames; per-word sums kept
    ids, tf = PhoneTokenizer()(["你好", "<SP>", "hi"], [9, 3, 4], "zh")
    assert ids.dtype == torch.long and len(ids) == len(tf) == 7
    assert tf[:4].sum() == 9 and tf[4] == 3 and tf[5:].sum() == 4


def test_length_regulator_totals_and_order():
    x = torch.arange(2 * 3, dtype=torch.float32).reshape(2, 3, 1)
    d = torch.tensor([[2, 0, 3], [1, 1, 0]])
    frames, mask, index = length_regulate(x, d)
    assert frames.shape == (2, 5, 1)
    assert frames[0, :, 0].tolist() == [0, 0, 2, 2, 2]
    assert frames[1, :2, 0].tolist() == [3, 4] and frames[1, 2:].abs().sum() == 0
    assert mask.sum(1).tolist() == [5, 2]
    assert index[0].tolist() == [0, 0, 2, 2, 2]
    frames, mask, _ = length_regulate(x, d, n_frames=8)
    assert frames.shape == (2, 8, 1) and mask.sum(1).tolist() == [5, 2]
    with pytest.raises(ValueError, match="n_frames"):
        length_regulate(x, d, n_frames=4)


def test_position_features_place_each_frame_in_its_token_and_word():
    tokens = torch.tensor([[2, 0, 3], [4, 0, 0]])
    feats = span_position_features(tokens, 6)
    assert feats.shape == (2, 6, 3)
    # line 0: token 0 over frames 0-1 (r = 1/4, 3/4), token 2 over frames 2-4 (r = 1/6, 1/2, 5/6)
    r = torch.tensor([1 / 4, 3 / 4, 1 / 6, 1 / 2, 5 / 6])
    dur = torch.tensor([2.0, 2, 3, 3, 3])
    torch.testing.assert_close(feats[0, :5, 0], 2 * r - 1)
    torch.testing.assert_close(feats[0, :5, 1], torch.sin(torch.pi * r))
    torch.testing.assert_close(feats[0, :5, 2], torch.log(dur) / torch.log(torch.tensor(64.0)))
    torch.testing.assert_close(feats[1, :4, 0], 2 * torch.tensor([1 / 8, 3 / 8, 5 / 8, 7 / 8]) - 1)
    assert feats[0, 5:].abs().sum() == 0 and feats[1, 4:].abs().sum() == 0  # past the line's end
    # words: line 0 is one word of tokens 0-2 (5 frames), line 1 two words (token 0; tokens 1-2)
    word_index = torch.tensor([[0, 0, 0], [0, 1, 1]])
    words = word_frames_of_tokens(tokens, word_index)
    assert words.tolist() == [[5, 0], [4, 0]]
    both = frame_position_features(tokens, words, 6)
    assert both.shape == (2, 6, POSITION_FEATURES)
    torch.testing.assert_close(both[:, :, :3], feats)
    torch.testing.assert_close(both[0, :5, 3], 2 * (torch.arange(5) + 0.5) / 5 - 1)


def test_position_spans_agree_between_the_data_words_and_a_scripts_text():
    from isdrama.inference.generator import line_words

    tok = PhoneTokenizer()
    # English: one span per word; a word in Han characters: one span per token (the script's text
    # has no spaces, so the data's segmentation 红色 / 的 / 门 cannot be found again at inference)
    for text, data_words in [
        ("Well, the red door.", ["<SP>", "well", "<SP>", "the", "red", "door", "<SP>"]),
        ("红色的门，你好。", ["<SP>", "红色", "的", "门", "<SP>", "你好", "<SP>"]),
    ]:
        script_words = line_words(text)
        assert tok.tokenize_words(script_words)[0] == tok.tokenize_words(data_words)[0]
        assert tok.position_spans(script_words).tolist() == tok.position_spans(data_words).tolist()
    spans = tok.position_spans(["<SP>", "the", "red", "<SP>"])
    assert spans.tolist() == [0, 1, 1, 1, 2, 2, 2, 3]
    frames = torch.tensor([[2, 3, 3, 3, 4, 4, 4, 1]])
    assert word_frames_of_tokens(frames, torch.as_tensor(spans)[None]).tolist() == [[2, 9, 12, 1]]
    han = tok.position_spans(["门", "<SP>"])
    assert han.tolist() == list(range(len(tok.tokenize_word("门")) + 1))


def test_constrained_durations_sum_exactly():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        B, L = 4, 12
        log_pred = torch.randn(B, L, generator=g) * 2
        lengths = torch.randint(1, L + 1, (B,), generator=g)
        mask = torch.arange(L)[None] < lengths[:, None]
        totals = torch.randint(0, 300, (B,), generator=g)
        d = durations_from_log(log_pred, mask, totals)
        assert d.dtype == torch.long and (d >= 0).all()
        assert d.sum(1).tolist() == totals.tolist()
        assert d[~mask].abs().sum() == 0
    # a row predicted as all zero frames is spread evenly
    zero = torch.full((1, 4), float(np.log(1.0)))
    assert durations_from_log(zero, torch.ones(1, 4, dtype=torch.bool), torch.tensor([8])).tolist() == [[2, 2, 2, 2]]
    # unconstrained: exp(log) - 1, rounded by cumulative sums, speed divides
    lp = torch.log(torch.tensor([[3.4, 2.2, 5.0]]) + 1)
    assert durations_from_log(lp, torch.ones(1, 3, dtype=torch.bool)).tolist() == [[3, 3, 5]]
    assert durations_from_log(lp, torch.ones(1, 3, dtype=torch.bool), speed=2.0).tolist() == [[2, 1, 2]]


# ------------------------------------------------------------------------------- encoder
def _batch(enc: ContentEncoder):
    lines = [enc.prepare(["我们", "<SP>", "hello"], [0.3, 0.1, 0.4]), enc.prepare(["去", "ok"], [0.2, 0.15])]
    return collate_lines(lines, enc.vocab.pad_id)


def test_encoder_shapes_and_frame_rate_argument():
    enc = tiny_encoder().eval()
    b = _batch(enc)
    out = enc(b["tokens"], b["token_mask"], b["durations"])
    B, L = b["tokens"].shape
    T = int(b["durations"].sum(1).max())
    assert T == 60
    assert out["z_c"].shape == (B, T, 32) and out["frame_mask"].shape == (B, T)
    assert out["frame_mask"].sum(1).tolist() == b["durations"].sum(1).tolist()
    assert out["token_hidden"].shape == (B, L, 32) and out["log_duration"].shape == (B, L)
    assert out["duration_loss"].dim() == 0
    assert out["z_c"][~out["frame_mask"]].abs().sum() == 0
    out = enc(b["tokens"], b["token_mask"], b["durations"], n_frames=70)
    assert out["z_c"].shape[1] == 70
    # inference: predicted durations constrained to a frame count per line
    out = enc(b["tokens"], b["token_mask"], total_frames=torch.tensor([50, 33]))
    assert out["frame_mask"].sum(1).tolist() == [50, 33] and "duration_loss" not in out
    fast = tiny_encoder(frame_rate=50.0)
    assert fast.prepare(["hi"], [1.0]).durations.sum() == 50


def test_padding_does_not_change_valid_outputs():
    enc = tiny_encoder().eval()
    b = _batch(enc)
    out = enc(b["tokens"], b["token_mask"], b["durations"])
    tokens = b["tokens"].clone()
    tokens[~b["token_mask"]] = 7  # garbage in padded positions
    out2 = enc(tokens, b["token_mask"], b["durations"])
    fm = out["frame_mask"]
    assert torch.allclose(out["z_c"][fm], out2["z_c"][fm], atol=1e-6)
    # the short line alone gives the same frames as inside the padded batch
    n = int(b["token_mask"][1].sum())
    alone = enc(b["tokens"][1:, :n], b["token_mask"][1:, :n], b["durations"][1:, :n])
    t = int(fm[1].sum())
    assert torch.allclose(alone["z_c"][0], out["z_c"][1, :t], atol=1e-5)
    assert torch.allclose(alone["log_duration"][0], out["log_duration"][1, :n], atol=1e-5)


def test_duration_loss_is_masked_mse_and_falls_with_training():
    lp = torch.tensor([[0.0, 1.0, 9.0]])
    d = torch.tensor([[0, 1, 100]])
    m = torch.tensor([[True, True, False]])
    expected = ((0.0 - np.log(1)) ** 2 + (1.0 - np.log(2)) ** 2) / 2
    assert duration_loss(lp, d, m).item() == pytest.approx(expected, rel=1e-6)

    enc = tiny_encoder(seed=3)
    b = _batch(enc)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = enc(b["tokens"], b["token_mask"], b["durations"])["duration_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_state_dict_round_trip_carries_the_vocabulary():
    vocab = Vocabulary.default().extended(["<AP>", "<BR>"])
    torch.manual_seed(0)
    enc = ContentEncoder(tiny_config(), vocab=vocab).eval()
    b = _batch(enc)
    ref = enc(b["tokens"], b["token_mask"], total_frames=torch.tensor([40, 30]))
    state = enc.state_dict()
    restored_vocab = ContentEncoder.vocab_from_state_dict(state)
    assert restored_vocab == vocab
    torch.manual_seed(1)
    new = ContentEncoder(tiny_config(), vocab=restored_vocab).eval()
    new.load_state_dict(state)
    assert new.vocab == vocab
    out = new(b["tokens"], b["token_mask"], total_frames=torch.tensor([40, 30]))
    assert torch.equal(out["z_c"], ref["z_c"]) and torch.equal(out["durations"], ref["durations"])
    # a model built with another vocabulary size refuses the checkpoint
    with pytest.raises(ValueError, match="vocabulary"):
        ContentEncoder(tiny_config()).load_state_dict(state)


def test_semantic_features_from_a_local_bert_folder(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizer

    chars = list("我们去你好") + ["hello", "ok"]
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]) + "\n")
    folder = tmp_path / "tiny-bert"
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=5 + len(chars), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    ).save_pretrained(folder)

    enc = tiny_encoder(semantic_model=str(folder)).eval()
    words = [["我们", "<SP>", "hello"], ["去", "ok"]]
    lines = [enc.prepare(words[0], [0.3, 0.1, 0.4]), enc.prepare(words[1], [0.2, 0.15])]
    b = collate_lines(lines)
    out = enc(b["tokens"], b["token_mask"], b["durations"], words=words, word_index=b["word_index"])
    assert out["z_c"].shape == (2, 60, 32)
    other = enc(
        b["tokens"],
        b["token_mask"],
        b["durations"],
        words=[["你好", "<SP>", "ok"], ["去", "ok"]],
        word_index=b["word_index"],
    )
    assert not torch.allclose(out["z_c"][0], other["z_c"][0])  # the words are used
    assert torch.allclose(out["z_c"][1], other["z_c"][1], atol=1e-6)
    assert all(not p.requires_grad for p in enc.semantic.model.parameters())
    with pytest.raises(ValueError, match="word_index"):
        enc(b["tokens"], b["token_mask"], b["durations"])
