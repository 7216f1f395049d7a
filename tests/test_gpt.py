"""The from-scratch GPT recommender (sidrec.models.gpt): stream and batch format, causality, save/load, the
recommend() contract, and that a tiny model trained with the shared loop learns a deterministic next-item rule."""
import numpy as np
import pandas as pd
import pytest
import torch

from sidrec.data.sequences import sliding_windows
from sidrec.models.gpt import IGNORE, GPTArch, GPTRecommender, SequenceCodec, build_gpt
from sidrec.recommend import DecodeSettings
from sidrec.systems import load_recommender
from sidrec.tokenizers.atomic import atomic_table
from sidrec.tokenizers.sids import SidTable, add_collision_suffix
from sidrec.train import LoopConfig, fit

N_ITEMS = 12
ARCH = GPTArch(n_layer=2, n_head=2, n_embd=16, dropout=0.0, max_history=4)


def sid_table(n: int = N_ITEMS) -> SidTable:
    """(i mod 3, i // 3 mod 2) + collision suffix: every code prefix is shared, so the suffix matters."""
    i = np.arange(n)
    codes = add_collision_suffix(np.stack([i % 3, (i // 3) % 2], 1))
    return SidTable(codes, [3, 2, int(codes[:, -1].max()) + 1], {"levels": 2})


def make_rec(sids: SidTable, arch: GPTArch = ARCH, seed: int = 0, decode: DecodeSettings = DecodeSettings(
        beam_size=6, batch_size=4)) -> GPTRecommender:
    torch.manual_seed(seed)
    codec = SequenceCodec(sids)
    model = build_gpt(arch, codec.layout, codec.max_positions(arch.max_history)).eval()
    return GPTRecommender(model, codec, arch, decode)


def case_frame(histories: list[list[int]], targets: list[int] | None = None) -> pd.DataFrame:
    df = pd.DataFrame({"case_id": range(len(histories)), "history": histories, "seen": histories})
    return df if targets is None else df.assign(target=targets)


def test_stream_format():
    codec = SequenceCodec(sid_table())
    lay = codec.layout
    tok = codec.item_tokens
    assert tok.shape == (N_ITEMS, 3)
    assert codec.stream([5, 0]) == [lay.bos, *tok[5], lay.sep, *tok[0], lay.sep]
    assert codec.stream([]) == [lay.bos]
    # item 5 = codes (2, 1, s): tokens are offset per position
    np.testing.assert_array_equal(tok[5], [2, 3 + 1, 5 + codec.sids.codes[5, 2]])


def test_collate_labels_padding_and_mask():
    codec = SequenceCodec(sid_table())
    lay = codec.layout
    batch = codec.collate([np.array([1, 2, 3]), np.array([4])])
    long, short = codec.stream([1, 2, 3]), codec.stream([4])
    assert batch["input_ids"].shape == (2, len(long)) == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["input_ids"][0].tolist() == long
    assert batch["input_ids"][1].tolist() == short + [lay.pad] * (len(long) - len(short))  # right padding
    assert batch["attention_mask"][1].tolist() == [1] * len(short) + [0] * (len(long) - len(short))
    assert batch["attention_mask"][0].tolist() == [1] * len(long)
    # labels: the ID tokens themselves; BOS, SEP and PAD are ignored
    expected = [[t if t < lay.bos else IGNORE for t in s] for s in (long, batch["input_ids"][1].tolist())]
    assert batch["labels"].tolist() == expected
    assert (batch["labels"][1] != IGNORE).sum() == 3 and (batch["labels"][0] != IGNORE).sum() == 9
    # a full training window (max_history + 1 items) fits the model's positions exactly
    full = codec.collate([np.arange(ARCH.max_history + 1)])
    assert full["input_ids"].shape[1] == codec.max_positions(ARCH.max_history)


def test_gpt_is_causal():
    rec = make_rec(sid_table())
    vocab = rec.codec.layout.vocab_size
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1) % vocab
    with torch.no_grad():
        a, b = rec.model(input_ids=ids).logits, rec.model(input_ids=changed).logits
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_save_load_identical_logits(tmp_path):
    sids = sid_table()
    rec = make_rec(sids)
    sids.save(tmp_path / "sids.parquet")
    rec.save(tmp_path / "gpt", {"valid_ndcg@10": 0.1})
    back = GPTRecommender.load(tmp_path / "gpt", sids)
    assert back.arch == rec.arch
    ids = torch.tensor([rec.codec.stream([3, 1, 7])])
    with torch.no_grad():
        torch.testing.assert_close(back.model(input_ids=ids).logits, rec.model(input_ids=ids).logits, rtol=0, atol=0)
    by_name = load_recommender("baseline", str(tmp_path / "gpt"), str(tmp_path / "sids.parquet"),
                               DecodeSettings(beam_size=6, batch_size=4))
    c = case_frame([[3, 1], [0]])
    np.testing.assert_array_equal(by_name.recommend(c, 5)[0], rec.recommend(c, 5)[0])
    with pytest.raises(ValueError, match="vocab sizes"):
        GPTRecommender.load(tmp_path / "gpt", atomic_table(N_ITEMS))


@pytest.mark.parametrize("sids", [sid_table(), atomic_table(N_ITEMS)], ids=["sid", "atomic"])
def test_recommend_contract(sids):
    rec = make_rec(sids, seed=1)
    histories = [[0], [1, 2, 3, 4], [5, 6, 7, 8], [11, 0, 1]]
    k = 5
    items, scores = rec.recommend(case_frame(histories), k)
    assert items.shape == scores.shape == (4, k)
    for row, seen in zip(items, histories):
        assert ((row >= 0) & (row < N_ITEMS)).all()  # exactly k catalogue items
        assert len(set(row.tolist())) == k  # no duplicates
        assert not set(row.tolist()) & set(seen)  # exclude_seen
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    rate = rec.invalid_rate(case_frame(histories), k)
    assert 0.0 <= rate <= 1.0


def test_recommend_can_return_seen_items_when_allowed():
    sids = sid_table()
    rec = make_rec(sids, seed=1, decode=DecodeSettings(beam_size=N_ITEMS, batch_size=4, exclude_seen=False))
    items, _ = rec.recommend(case_frame([[0, 1, 2]]), N_ITEMS)
    assert sorted(items[0].tolist()) == list(range(N_ITEMS))  # beam = catalogue: every item, seen ones too


def test_recommend_keeps_the_last_max_history_items():
    """A history longer than the model's context is cut to its last max_history items (not an IndexError)."""
    rec = make_rec(sid_table(), seed=2, decode=DecodeSettings(beam_size=6, batch_size=4, exclude_seen=False))
    long = list(range(10))
    items, scores = rec.recommend(case_frame([long]), 5)
    cut, cut_scores = rec.recommend(case_frame([long[-ARCH.max_history:]]), 5)
    np.testing.assert_array_equal(items, cut)
    np.testing.assert_allclose(scores, cut_scores, rtol=1e-5)
    assert 0.0 <= rec.invalid_rate(case_frame([long]), 5) <= 1.0


def test_tiny_gpt_learns_successor_rule():
    """Item i is always followed by item (i + 1) mod N; after training, rank 0 is the successor."""
    sids = sid_table()
    arch = GPTArch(n_layer=1, n_head=2, n_embd=32, dropout=0.0, max_history=4)
    rec = make_rec(sids, arch=arch, decode=DecodeSettings(beam_size=5, batch_size=32))
    rng = np.random.default_rng(0)
    seqs = [(s + np.arange(n)) % N_ITEMS for s, n in zip(rng.integers(0, N_ITEMS, 80), rng.integers(3, 9, 80))]
    windows = sliding_windows(seqs, arch.max_history + 1, 2)
    loop = LoopConfig(epochs=60, batch_size=16, lr=5e-3, warmup_ratio=0.05, seed=0)  # ~540 steps, ~3 s
    res = fit(rec, windows, loop, collate_fn=rec.codec.collate)
    assert res.history[-1]["train_loss"] < 0.5 * res.history[0]["train_loss"]
    starts = np.arange(N_ITEMS)
    histories = [[(s + j) % N_ITEMS for j in range(1 + s % 4)] for s in starts]
    targets = [(h[-1] + 1) % N_ITEMS for h in histories]
    items, _ = rec.recommend(case_frame(histories, targets), 5)
    accuracy = float(np.mean(items[:, 0] == np.array(targets)))
    assert accuracy >= 0.8, (accuracy, items[:, 0], targets)
    assert rec.invalid_rate(case_frame(histories), 5) < 1.0
