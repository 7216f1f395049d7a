"""The LLM path on a tiny random Llama: vocabulary surgery and centroid init, corpus and prompt formats, LoRA SFT
touching only adapters and new-token rows, save/load round trip, and constrained decoding of valid items."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llm_fixtures import tiny_llama, tiny_tokenizer
from sidrec.corpus.build import cpt_corpus, history_windows, sft_examples
from sidrec.corpus.prompts import PromptCodec, item_noun
from sidrec.models.llm import (LLMRecommender, LoraSettings, TrainSettings, ValidationCheckpoints, add_sid_vocabulary,
                               checkpoint_steps, sft_dense_batch, load_base, load_llm,
                               packed_batch, pad_right, perplexity, save_llm, sft_batch, sid_token_names, train_lm,
                               with_lora)
from sidrec.recommend import DecodeSettings
from sidrec.tokenizers.sids import SidTable, add_collision_suffix

TITLES = ["Silent River", "Night Return", "Glass Empire", "Summer Ghost", "Last Garden", "Iron Winter",
          "Secret Storm", "Little City"]


def make_sids(n: int = len(TITLES), seed: int = 0) -> SidTable:
    codes = add_collision_suffix(np.random.default_rng(seed).integers(0, 3, size=(n, 2)))
    return SidTable(codes, [3, 3, int(codes[:, -1].max()) + 1], {"tokenizer": "toy"})


def make_events() -> pd.DataFrame:
    rows = []
    for u in range(4):
        for t, item in enumerate(np.random.default_rng(u).permutation(len(TITLES))[:6]):
            rows.append((u, int(item), t, "train" if t < 4 else ("valid" if t == 4 else "test")))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])


@pytest.fixture()
def setup():
    tok = tiny_tokenizer(TITLES + ["Horror Comedy Drama"])
    model = tiny_llama(len(tok))
    sids = make_sids()
    ids = add_sid_vocabulary(model, tok, sids, TITLES, noise=0.0, seed=0)
    return model, tok, sids, ids, PromptCodec(tok, ids, sids, TITLES, "movie")


def test_surgery_adds_one_token_per_code_at_its_title_centroid():
    tok = tiny_tokenizer(TITLES)
    model = tiny_llama(len(tok))
    base = model.get_input_embeddings().weight.detach().clone()
    sids = make_sids()
    ids = add_sid_vocabulary(model, tok, sids, TITLES, noise=0.0, seed=0)
    names = sid_token_names(sids.vocab_sizes)
    assert tok.convert_tokens_to_ids(names) == ids.tolist() and len(set(ids.tolist())) == len(names)
    weight = model.get_input_embeddings().weight.detach()
    assert weight.shape[0] == len(tok) and torch.equal(weight[:len(base)], base)
    assert model.get_output_embeddings().weight.data_ptr() == weight.data_ptr()  # still tied
    title_vec = [base[tok(t, add_special_tokens=False).input_ids].mean(0) for t in TITLES]
    for pos in range(sids.codes.shape[1]):
        for code in range(sids.vocab_sizes[pos]):
            row = weight[ids[names.index(f"<p{pos}_{code}>")]]
            carriers = np.flatnonzero(sids.codes[:, pos] == code)
            expected = (torch.stack([title_vec[i] for i in carriers]).mean(0) if len(carriers)
                        else torch.stack(title_vec).mean(0))
            torch.testing.assert_close(row, expected)


def test_surgery_noise_is_seeded_and_small():
    rows = []
    for _ in range(2):
        tok = tiny_tokenizer(TITLES)
        model = tiny_llama(len(tok))
        ids = add_sid_vocabulary(model, tok, make_sids(), TITLES, noise=0.01, seed=3)
        rows.append(model.get_input_embeddings().weight[ids].detach())
    torch.testing.assert_close(rows[0], rows[1])
    tok = tiny_tokenizer(TITLES)
    model = tiny_llama(len(tok))
    ids = add_sid_vocabulary(model, tok, make_sids(), TITLES, noise=0.0, seed=3)
    gap = (rows[0] - model.get_input_embeddings().weight[ids].detach()).abs().max()
    assert 0 < gap < 0.1 * float(model.get_input_embeddings().weight.detach().std())


def test_surgery_rejects_a_second_pass_and_wrong_titles(setup):
    model, tok, sids, _, _ = setup
    with pytest.raises(ValueError, match="already has SID tokens"):
        add_sid_vocabulary(model, tok, sids, TITLES, 0.0, 0)
    with pytest.raises(ValueError, match="titles"):
        add_sid_vocabulary(tiny_llama(10), tiny_tokenizer(), sids, TITLES[:3], 0.0, 0)


def test_untied_output_rows_get_output_centroids():
    tok = tiny_tokenizer(TITLES)
    model = tiny_llama(len(tok), tied=False)
    out_base = model.get_output_embeddings().weight.detach().clone()
    sids = make_sids()
    ids = add_sid_vocabulary(model, tok, sids, TITLES, noise=0.0, seed=0)
    code0 = np.flatnonzero(sids.codes[:, 0] == 0)
    expected = torch.stack([out_base[tok(TITLES[i], add_special_tokens=False).input_ids].mean(0) for i in code0]).mean(0)
    torch.testing.assert_close(model.get_output_embeddings().weight[ids[0]].detach(), expected)


def test_prompt_formats(setup):
    _, tok, sids, ids, codec = setup
    a, b = codec.identity(2)
    assert tok.decode(a[:-1 - 3]).replace(" ", "") == "TheitemGlassEmpireisrepresentedbyID"
    assert a[-4:-1] == codec.sid([2]) and b[1:4] == codec.sid([2])
    assert codec.sid([2]) == [int(ids[0 + sids.codes[2, 0]]), int(ids[3 + sids.codes[2, 1]]),
                              int(ids[6 + sids.codes[2, 2]])]
    plain, steered = codec.prompt([0, 1]), codec.prompt([0, 1], "Horror")
    assert plain[:-2] == steered[:len(plain) - 2] and len(steered) > len(plain)
    assert tok.decode(plain[-2:]).replace(" ", "") == "Recommendation:"
    assert item_noun("ml-100k") == "movie" and item_noun("amazon-beauty") == "product"


def test_cpt_corpus_uses_train_events_and_every_item(setup):
    _, _, _, _, codec = setup
    events = make_events()
    train, held, counts = cpt_corpus(codec, events, window=3, max_sequences=0, identity_repeats=2, heldout=0.25, seed=0)
    assert counts["identity_sentences"] == 2 * 2 * len(TITLES)
    assert counts["history_sentences"] + counts["heldout_sentences"] == len(history_windows(events, 3))
    train_items = set(events.loc[events.split == "train", "item_id"])
    windows = history_windows(events, 3)
    assert all(set(w.tolist()) <= train_items for w in windows)
    assert sum(len(w) for w in windows) == int((events.split == "train").sum())
    assert not {tuple(h) for h in held} & {tuple(t) for t in train}
    again = cpt_corpus(codec, events, 3, 0, 2, 0.25, 0)
    assert again[0] == train and again[1] == held


def test_sft_examples_end_with_the_target_and_carry_true_constraints(setup):
    _, tok, _, _, codec = setup
    events = make_events()
    genres = [["Horror"], ["Comedy", "Drama"], [], ["Horror"], ["Drama"], ["Comedy"], ["Horror"], ["Drama"]]
    examples, tails, counts = sft_examples(codec, events, genres, max_history=2, max_examples=0,
                                           constraint_share=1.0, seed=0)
    assert tails == [3] * len(examples) and counts["targets"] == len(examples)
    assert counts["examples"] == 4 * 3  # 4 train events per user, each but the first is a target
    targets = {tuple(codec.sid([i])): i for i in range(len(TITLES))}
    for ex in examples:
        target = targets[tuple(ex[-3:])]
        text = tok.decode(ex[:-3])
        if genres[target]:
            assert "Constraint" in text and any(f"Suggest a {g} movie" in text for g in genres[target])
        assert text.rstrip().endswith("Recommendation :") or text.rstrip().endswith("Recommendation:")
    assert counts["constrained"] == sum(1 for ex in examples if "Constraint" in tok.decode(ex[:-3]))


def test_dense_sft_examples_target_every_item_after_the_first_in_the_decoding_format(setup):
    _, tok, sids, ids, _ = setup
    events = make_events()
    genres = [["Horror"], ["Comedy", "Drama"], [], ["Horror"], ["Drama"], ["Comedy"], ["Horror"], ["Drama"]]
    dense = PromptCodec(tok, ids, sids, TITLES, "movie", "dense")
    streams, tails, counts = sft_examples(dense, events, genres, max_history=2, max_examples=0,
                                          constraint_share=0.0, seed=0, objective="dense")
    train = {u: g.loc[g.split == "train", "item_id"].tolist() for u, g in events.groupby("user_id")}
    assert counts["constrained"] == 0 and counts["windows"] == len(streams)
    head = len(dense.sequence([]))
    covered = set()
    for s, tail in zip(streams, tails):
        items = [next(i for i in range(len(TITLES)) if dense.sid([i]) == s[j:j + 3]) for j in range(head, len(s), 3)]
        assert 2 <= len(items) <= 3 and tail == 3 * (len(items) - 1)  # windows of up to max_history + 1 items
        user = next(u for u, t in train.items() if any(t[a:a + len(items)] == items for a in range(len(t))))
        covered |= {(user, items[j - 1], items[j]) for j in range(1, len(items))}
        # what the loss covers is what decoding asks: the prompt of the earlier items, then the next item's SID
        for j in range(1, len(items)):
            assert s[:head + 3 * j] == dense.prompt(items[:j]) and s[head + 3 * j:head + 3 * j + 3] == dense.sid([items[j]])
    assert covered == {(u, t[j - 1], t[j]) for u, t in train.items() for j in range(1, len(t))}  # every target
    assert counts["targets"] == sum(t // 3 for t in tails)
    steered = sft_examples(dense, events, genres, 2, 0, 0.5, 0, "dense")
    assert steered[2]["constrained"] == steered[2]["examples"] - steered[2]["windows"] > 0
    for s, tail in zip(steered[0], steered[1]):
        text = tok.decode(s[:-tail])
        assert ("Constraint" in text) == (tail == 3 and "Recommendation" in text)
    with pytest.raises(ValueError, match="sft.objective"):
        sft_examples(dense, events, genres, 2, 0, 0.5, 0, "every")


def test_dense_sft_batch_loss_is_the_tail_tokens_only(setup):
    model, tok, _, _, codec = setup
    seqs = [codec.sequence([0, 1, 2]), codec.prompt([3], "Horror") + codec.sid([4])]
    tails = [6, 3]
    batch = sft_dense_batch(seqs, tails, tok.pad_token_id)
    loss = model(**batch).loss
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    picked = [(i, t) for i, (s, tail) in enumerate(zip(seqs, tails)) for t in range(len(s) - tail, len(s))]
    manual = torch.stack([torch.nn.functional.cross_entropy(logits[i, t - 1], batch["input_ids"][i, t])
                          for i, t in picked]).mean()
    torch.testing.assert_close(loss, manual)


def test_checkpoint_steps_are_log_spaced_and_the_best_checkpoint_is_restored(setup):
    model, tok, _, ids, codec = setup
    assert checkpoint_steps(80, 4) == [10, 20, 40, 80] and checkpoint_steps(2, 4) == [1, 2]
    lm = with_lora(model, ids, LoraSettings(rank=4, alpha=8, dropout=0.0))
    scores = iter([0.3, 0.5, 0.1, 0.2])
    snapshots = []

    def score(m):
        snapshots.append({n: t.detach().clone() for n, t in m.named_parameters() if t.requires_grad})
        return {"valid_ndcg@10": next(scores)}

    cb = ValidationCheckpoints(lm, checkpoint_steps(4, 4), score, "valid_ndcg@10")
    seqs = [codec.sequence([i, (i + 1) % len(TITLES)]) for i in range(8)]
    train_lm(lm, seqs, lambda b, t: sft_dense_batch(b, t, tok.pad_token_id),
             TrainSettings(epochs=1, batch_size=2, lr=0.05, seed=0, warmup_ratio=0.0), tails=[3] * 8, callbacks=[cb])
    assert [r["step"] for r in cb.curve] == [1, 2, 4]
    assert cb.restore()["step"] == 2
    now = {n: t.detach() for n, t in lm.named_parameters() if t.requires_grad}
    assert all(torch.equal(now[n], snapshots[1][n]) for n in now)
    assert not all(torch.equal(snapshots[1][n], snapshots[2][n]) for n in now)


def test_sft_batch_loss_is_the_target_tokens_only(setup):
    model, tok, _, _, codec = setup
    seqs = [codec.prompt([0, 1]) + codec.sid([2]), codec.prompt([3]) + codec.sid([4])]
    batch = sft_batch(seqs, tok.pad_token_id, 3)
    loss = model(**batch).loss
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 position_ids=batch["position_ids"]).logits
    manual = torch.nn.functional.cross_entropy(full[:, -4:-1].reshape(-1, full.shape[-1]),
                                               batch["input_ids"][:, -3:].reshape(-1))
    torch.testing.assert_close(loss, manual)


def test_one_sft_step_changes_only_lora_weights_and_new_token_rows(setup, tmp_path):
    model, tok, sids, ids, codec = setup
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lm = with_lora(model, ids, LoraSettings(rank=4, alpha=8, dropout=0.0))
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "trainable_tokens" in n for n in trainable)
    seqs = [codec.prompt([i]) + codec.sid([(i + 1) % len(TITLES)]) for i in range(4)]
    train_lm(lm, seqs, lambda b: sft_batch(b, tok.pad_token_id, 3),
             TrainSettings(epochs=1, batch_size=4, lr=0.05, seed=0, warmup_ratio=0.0, logging_steps=1))
    for name, p in lm.named_parameters():
        if not p.requires_grad:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            if key in before:
                assert torch.equal(p.detach(), before[key]), name
    merged = lm.merge_and_unload()
    emb = merged.get_input_embeddings().weight.detach()
    old = len(emb) - len(ids)
    assert torch.equal(emb[:old], before["model.embed_tokens.weight"][:old])
    assert not torch.equal(emb[ids], before["model.embed_tokens.weight"][ids])


def test_packed_cpt_batch_has_the_padded_batch_loss(setup):
    """The cpt stage's padding-free batches (one row, position ids restarting per sequence) give the same loss and
    gradients as the right-padded batch: transformers builds a block-diagonal causal mask from the position ids."""
    model, tok, _, _, codec = setup
    seqs = [codec.identity(0)[0], codec.sequence([1, 2, 3, 4]), codec.identity(5)[1]]
    padded = model(**pad_right(seqs, tok.pad_token_id)).loss
    batch = packed_batch(seqs)
    assert batch["input_ids"].shape == (1, sum(map(len, seqs)))
    packed = model(**batch).loss
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)
    grads = []
    for loss_fn in (lambda: model(**pad_right(seqs, tok.pad_token_id)).loss, lambda: model(**batch).loss):
        model.zero_grad()
        loss_fn().backward()
        grads.append(model.get_input_embeddings().weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("grouped", [True, False])
def test_train_lm_groups_batches_by_length_when_asked(setup, grouped):
    model, tok, _, ids, codec = setup
    short, long_ = codec.identity(0)[0], codec.sequence(list(range(len(TITLES))) * 2)
    seqs = [short if i % 2 else long_ for i in range(256)]  # alternating lengths, as CPT's corpus mixes them
    widths = []

    def collate(batch):
        widths.append(len({len(s) for s in batch}))
        return pad_right(batch, tok.pad_token_id)

    lm = with_lora(model, ids, LoraSettings(rank=4, alpha=8, dropout=0.0))
    train_lm(lm, seqs, collate, TrainSettings(epochs=1, batch_size=4, lr=0.01, seed=0, group_by_length=grouped))
    mixed = sum(w > 1 for w in widths)
    assert len(widths) == 64
    # grouped: HF sorts each mega-batch of 16 batches by length, so only a batch at a boundary of the 4 mega-batches
    # may mix lengths; shuffled: a batch of 4 holds both lengths with probability 7/8
    assert mixed <= 4 if grouped else mixed >= 40


def test_lora_rank_above_hidden_size_is_a_params_error(setup):
    model, _, _, ids, _ = setup
    with pytest.raises(ValueError, match="lora_rank"):
        with_lora(model, ids, LoraSettings(rank=64, alpha=8, dropout=0.0))


@pytest.mark.parametrize("lr", [0.02, 0.0])
def test_cpt_lowers_heldout_perplexity(setup, lr):
    """CPT on the training sentences lowers the perplexity of history windows it never saw (cpt_corpus's held-out
    half). The lr=0 control (LoRA starts as the identity, new-token rows stay put) leaves it exactly unchanged, so
    the drop is the training's, not an artefact of wrapping and merging the adapters."""
    model, tok, _, ids, codec = setup
    train, held, counts = cpt_corpus(codec, make_events(), 3, 0, 1, 0.5, 0)
    assert counts["heldout_sentences"] == len(held) >= 4 and not {tuple(s) for s in held} & {tuple(s) for s in train}
    before = perplexity(model, held, tok.pad_token_id, ids)
    lm = with_lora(model, ids, LoraSettings(rank=4, alpha=8, dropout=0.0))
    train_lm(lm, train * 4, packed_batch, TrainSettings(epochs=2, batch_size=8, lr=lr, seed=0, logging_steps=1))
    after = perplexity(lm.merge_and_unload(), held, tok.pad_token_id, ids)
    if lr == 0:
        assert after == pytest.approx(before, rel=1e-6)
    else:
        assert after["ppl"] < before["ppl"] and after["ppl_sid"] < before["ppl_sid"]


def test_save_load_round_trip_gives_identical_logits(setup, tmp_path):
    model, tok, sids, ids, codec = setup
    save_llm(tmp_path / "m", model, tok, {"sid_token_ids": ids.tolist(), "vocab_sizes": sids.vocab_sizes,
                                          "noun": "movie", "max_history": 5})
    loaded, tok2, meta = load_llm(tmp_path / "m")
    x = torch.tensor([codec.prompt([0, 1, 2], "Horror")])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, loaded(input_ids=x).logits, rtol=0, atol=0)
    assert tok2.convert_tokens_to_ids(sid_token_names(sids.vocab_sizes)) == meta["sid_token_ids"]


def test_llm_decode_returns_only_valid_unseen_items(setup, tmp_path):
    model, tok, sids, ids, _ = setup
    save_llm(tmp_path / "m", model, tok, {"sid_token_ids": ids.tolist(), "vocab_sizes": sids.vocab_sizes,
                                          "noun": "movie", "max_history": 5})
    rec = LLMRecommender.load(tmp_path / "m", sids, DecodeSettings(beam_size=5, batch_size=2))
    cases = pd.DataFrame({"history": [[0, 1], [2], [3, 4, 5]], "seen": [[0, 1], [2], [3, 4, 5]],
                          "constraint": [None, "Horror", None]})
    items, scores = rec.recommend(cases, 5)
    for row, seen in zip(items, cases["seen"]):
        assert len(set(row.tolist())) == 5 and all(0 <= i < len(TITLES) and i not in seen for i in row)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert 0.0 <= rec.invalid_rate(cases, 5) <= 1.0
    with pytest.raises(ValueError, match="vocab sizes"):
        LLMRecommender.load(tmp_path / "m", SidTable(sids.codes, [3, 3, sids.vocab_sizes[2] + 1], {}),
                            DecodeSettings())


@pytest.mark.parametrize("objective", ["dense", "last", None])
def test_a_loaded_llm_prompts_in_the_format_its_sft_objective_trained(setup, tmp_path, objective):
    model, tok, sids, ids, codec = setup
    meta = {"sid_token_ids": ids.tolist(), "vocab_sizes": sids.vocab_sizes, "noun": "movie", "max_history": 2}
    save_llm(tmp_path / "m", model, tok, meta if objective is None else {**meta, "objective": objective})
    rec = LLMRecommender.load(tmp_path / "m", sids, DecodeSettings(beam_size=5, batch_size=2))
    cases = pd.DataFrame({"history": [[0, 1, 2], [3]], "constraint": pd.Series([None, "Horror"], dtype=object)})
    plain, steered = rec._prompts(cases)
    loaded = rec.codec  # the saved tokenizer's codec
    assert loaded.objective == (objective or "last")
    recommend = list(loaded.text(" Recommendation:"))
    if objective == "dense":  # the history sentence it was trained on, truncated to max_history
        assert plain == loaded.sequence([1, 2]) and plain[-3:] == loaded.sid([2])
    else:  # models without the key predate the dense objective: the one-target prompt
        assert plain == loaded.sequence([1, 2]) + recommend
    assert steered[-len(recommend):] == recommend and len(steered) > len(loaded.sequence([3])) + len(recommend)


@pytest.mark.parametrize("missing", [None, float("nan"), ""])
def test_a_missing_constraint_in_a_string_column_is_no_constraint(setup, tmp_path, missing):
    """pandas 3 stores None in a str column as NaN (truthy); it must not become the constraint "nan"."""
    model, tok, sids, ids, _ = setup
    save_llm(tmp_path / "m", model, tok, {"sid_token_ids": ids.tolist(), "vocab_sizes": sids.vocab_sizes,
                                          "noun": "movie", "max_history": 2, "objective": "last"})
    rec = LLMRecommender.load(tmp_path / "m", sids, DecodeSettings(beam_size=5, batch_size=2))
    cases = pd.DataFrame({"history": [[0, 1], [0, 1]], "constraint": pd.Series([missing, "Horror"])})
    plain, steered = rec._prompts(cases)
    assert plain == rec.codec.prompt([0, 1], None)
    assert steered == rec.codec.prompt([0, 1], "Horror") and steered != plain


def test_bf16_decode_casts_once_and_keeps_the_contract(setup, tmp_path):
    """eval.llm_dtype=bfloat16: the evaluate/steer loader casts the weights; items stay valid, scores ordered."""
    from sidrec.systems import load_recommender

    model, tok, sids, ids, _ = setup
    save_llm(tmp_path / "m", model, tok, {"sid_token_ids": ids.tolist(), "vocab_sizes": sids.vocab_sizes,
                                          "noun": "movie", "max_history": 5, "mixed_precision": "bf16"})
    sids.save(tmp_path / "sids.parquet")
    cases = pd.DataFrame({"history": [[0, 1], [2], [3, 4, 5]], "seen": [[0, 1], [2], [3, 4, 5]],
                          "constraint": [None, "Horror", None]})
    found = {}
    for dtype in ("float32", "bfloat16"):
        rec = load_recommender("plum", str(tmp_path / "m"), str(tmp_path / "sids.parquet"),
                               DecodeSettings(beam_size=5, batch_size=2, llm_dtype=dtype))
        assert {p.dtype for p in rec.model.parameters()} == {getattr(torch, dtype)}
        items, scores = rec.recommend(cases, 5)
        for row, seen in zip(items, cases["seen"]):
            assert len(set(row.tolist())) == 5 and all(0 <= i < len(TITLES) and i not in seen for i in row)
        assert np.all(np.diff(scores, axis=1) <= 1e-6)
        found[dtype] = items
    assert (found["float32"][:, 0] == found["bfloat16"][:, 0]).mean() >= 2 / 3  # same model, rounding apart
    with pytest.raises(ValueError, match="eval.llm_dtype"):
        load_recommender("plum", str(tmp_path / "m"), str(tmp_path / "sids.parquet"),
                         DecodeSettings(llm_dtype="float16"))


def test_unknown_base_model_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="llm.base"):
        load_base(str(tmp_path / "no-such-model"))
