"""The LAMIA palette network on a tiny random Llama: the hierarchical mask pattern, the task seeing the content only
through the palette, the packed two-pass computation equal to the masked full-sequence dual pass, gradients
reaching pass 1, the hinge losses against hand-computed values, the task examples, and the stage end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import sidrec.models.palette as palette_mod
from llm_fixtures import tiny_llama, tiny_tokenizer, write_tiny_llm
from sidrec.config import PaletteConfig
from sidrec.models.llm import LoraSettings, load_llm, with_lora
from sidrec.models.palette import (PaletteNet, PaletteObjective, add_palette_tokens, encode_palette,
                                   hierarchical_mask, hinge_losses, learn_palette)
from sidrec.models.palette_data import IGNORE, PaletteCollator, build_examples, pack

REPO = Path(__file__).resolve().parents[1]
WORDS = "Silent River Night Return Glass Empire Summer Ghost Last Garden Iron Winter".split()
GENRES = ["Horror", "Comedy", "Drama"]
VOCAB = WORDS + GENRES + ["1994 1995 1996 title genres year Genres"]


def make_items(n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        title = " ".join(rng.choice(WORDS, 1 + i % 3))
        genres = list(rng.choice(GENRES, i % 3, replace=False))
        year = None if i == 5 else int(rng.integers(1994, 1997))
        rows.append({"item_id": i, "source_id": str(i), "title": title, "genres": genres, "year": year,
                     "text": f"{title} ( {year} ) . Genres : {' , '.join(genres)} .", "first_seen": 0})
    df = pd.DataFrame(rows)
    df["year"] = df["year"].astype("Int64")
    return df


def make_net(length: int = 3, lora: bool = True, seed: int = 0, attn: str = "sdpa"):
    tok = tiny_tokenizer(VOCAB)
    model = tiny_llama(len(tok), seed=seed)
    model.set_attn_implementation(attn)
    lap, ldp = add_palette_tokens(model, tok, length, seed)
    lm = model
    if lora:
        lm = with_lora(model, lap, LoraSettings(4, 8.0, 0.0))
        with torch.no_grad():  # LoRA B starts at zero; make the adapters non-trivial
            for name, p in lm.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    net = PaletteNet(lm, lap, ldp, PaletteObjective(0.1, 0.1, 0.25))
    ex = build_examples(make_items(), tok, ["title", "genres", "year"], 32)
    return net, tok, ex, PaletteCollator(ex, lap, ldp, tok.pad_token_id, 0, 0, row_tokens=40)


def test_hierarchical_mask_pattern():
    # blocks: content c0 c1 | LaP a0 a1 | LdP d0 d1 | task t0 t1 t2
    expected = torch.tensor([
        # c0 c1 a0 a1 d0 d1 t0 t1 t2
        [1, 0, 0, 0, 0, 0, 0, 0, 0],  # c0
        [1, 1, 0, 0, 0, 0, 0, 0, 0],  # c1
        [1, 1, 1, 0, 0, 0, 0, 0, 0],  # a0: sees the content block + causal in LaP
        [1, 1, 1, 1, 0, 0, 0, 0, 0],  # a1
        [0, 0, 0, 0, 1, 0, 0, 0, 0],  # d0: LdP sees neither content nor LaP
        [0, 0, 0, 0, 1, 1, 0, 0, 0],  # d1
        [0, 0, 0, 0, 1, 1, 1, 0, 0],  # t0: task sees LdP + causal in task, never content or LaP
        [0, 0, 0, 0, 1, 1, 1, 1, 0],  # t1
        [0, 0, 0, 0, 1, 1, 1, 1, 1],  # t2
    ], dtype=torch.bool)
    assert torch.equal(hierarchical_mask(2, 2, 3), expected)


def _task_block(ex, item: int, task: int) -> list[int]:
    t, prompt, answer = next(x for x in ex.tasks[item] if x[0] == task)
    return prompt + answer


def dual_forward_masked(lm, lap_ids, ldp_ids, content: list[list[int]], tasks: list[list[int]],
                        palette: torch.Tensor | None = None) -> dict:
    """Reference dual forward pass over the full [content; LaP; LdP; task] sequences with the 4-D hierarchical mask
    (the paper's formulation; `PaletteNet` computes the same more cheaply). Reads `hierarchical_mask` from the
    palette module at call time, so a test can swap the mask there.

    Sequences are right-padded; padded query rows attend to themselves only (no empty softmax rows). The mask goes
    to the model as-is (transformers 5.x passes a 4-D mask through): bool for sdpa/flex, additive float for eager.
    Args:
        content, tasks: per example, the content and task block token ids.
        palette: optional (B, L, D) palette to put into LdP instead of pass 1's (to hold it fixed in tests).
    Returns:
        palette (B, L, D) and hidden (B, T, D) of pass 2, with `starts` (B, 4) block starts per example.
    """
    length = len(lap_ids)
    seqs = [list(c) + list(map(int, lap_ids)) + list(map(int, ldp_ids)) + list(t) for c, t in zip(content, tasks)]
    width = max(map(len, seqs))
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(seqs), 1, 1)  # (B, T, T), padding: self only
    for b, (s, c, t) in enumerate(zip(seqs, content, tasks)):
        ids[b, :len(s)] = torch.as_tensor(s)
        allowed[b, :len(s), :len(s)] = palette_mod.hierarchical_mask(len(c), length, len(t))
    mask = palette_mod.model_mask(allowed[:, None], lm)  # (B, 1, T, T)
    pos = torch.arange(width)[None].expand(len(seqs), -1)
    starts = torch.as_tensor([[0, len(c), len(c) + length, len(c) + 2 * length] for c in content])
    dec = lm.get_decoder()
    h1 = dec(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    lap_at = starts[:, 1:2] + torch.arange(length)[None]  # (B, L)
    own = h1[torch.arange(len(seqs))[:, None], lap_at]  # (B, L, D)
    palette = own if palette is None else palette
    emb = lm.get_input_embeddings()(ids).clone()
    emb[torch.arange(len(seqs))[:, None], lap_at + length] = palette.to(emb.dtype)  # LdP <- palette
    h2 = dec(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    return {"palette": own, "hidden": h2, "starts": starts}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_task_sees_content_only_through_the_palette(attn):
    net, tok, ex, _ = make_net(attn=attn)
    content_a = ex.content[0]
    content_b = [tok.convert_tokens_to_ids(w) for w in "Iron Winter Ghost Comedy".split()]
    task = _task_block(ex, 0, 0)
    with torch.no_grad():
        a = dual_forward_masked(net.lm, net.lap_ids, net.ldp_ids, [content_a], [task])
        b = dual_forward_masked(net.lm, net.lap_ids, net.ldp_ids, [content_b], [task], palette=a["palette"])
    s_a, s_b = int(a["starts"][0, 2]), int(b["starts"][0, 2])  # LdP start; task follows
    n = net.length + len(task)
    assert not torch.allclose(a["palette"], b["palette"], atol=1e-3)  # the palette does read the content
    torch.testing.assert_close(a["hidden"][0, s_a:s_a + n], b["hidden"][0, s_b:s_b + n], atol=1e-5, rtol=1e-5)


def test_a_causal_mask_would_leak_the_content(monkeypatch):
    """Positive control for the test above: with a plain causal mask the same perturbation changes the task."""
    net, tok, ex, _ = make_net()
    monkeypatch.setattr(palette_mod, "hierarchical_mask",
                        lambda c, length, t: torch.ones(c + 2 * length + t, c + 2 * length + t).tril().bool())
    content_b = [tok.convert_tokens_to_ids(w) for w in "Iron Winter Ghost Comedy".split()][:len(ex.content[0])]
    content_b += [tok.convert_tokens_to_ids("Horror")] * (len(ex.content[0]) - len(content_b))
    task = _task_block(ex, 0, 0)
    with torch.no_grad():
        a = dual_forward_masked(net.lm, net.lap_ids, net.ldp_ids, [ex.content[0]], [task])
        b = dual_forward_masked(net.lm, net.lap_ids, net.ldp_ids, [content_b], [task], palette=a["palette"])
    s = int(a["starts"][0, 2])
    assert not torch.allclose(a["hidden"][0, s:], b["hidden"][0, s:], atol=1e-4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_two_pass_equals_masked_full_sequence(attn):
    net, tok, ex, collate = make_net(attn=attn)
    items = list(range(len(ex.content)))
    batch = collate(items)
    assert batch["content_ids"].shape[0] > 1 and batch["task_ids"].shape[0] > 1  # several packed rows
    with torch.no_grad():
        pal = net.palette(batch)
        hidden = net.task_hidden(pal, batch)
        owners = batch["task_owner"].tolist()
        tasks = [_task_block(ex, items[o], int(t)) for o, t in zip(owners, batch["task_index"])]
        ref = dual_forward_masked(net.lm, net.lap_ids, net.ldp_ids, [ex.content[items[o]] for o in owners], tasks)
    torch.testing.assert_close(pal[batch["task_owner"]], ref["palette"], atol=1e-5, rtol=1e-5)
    for k, task in enumerate(tasks):
        s, n = int(ref["starts"][k, 2]), net.length + len(task)
        r, c = int(batch["ldp_row"][k, 0]), int(batch["ldp_col"][k, 0])
        torch.testing.assert_close(hidden[r, c:c + n], ref["hidden"][k, s:s + n], atol=1e-5, rtol=1e-5)


def test_task_loss_reaches_pass_one_and_the_lap_rows():
    net, tok, ex, collate = make_net()
    net.objective = PaletteObjective(gamma=0.0)  # generation loss only
    out = net.loss(collate([0, 1, 2, 3]))
    out["loss"].backward()
    grads = {n: p.grad for n, p in net.named_parameters() if p.requires_grad}
    lap_grad = next(g for n, g in grads.items() if "trainable_tokens_delta" in n)
    assert lap_grad.shape[0] == net.length and (lap_grad.abs().sum(1) > 0).all()  # every LaP row gets gradient
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n)


def test_hinge_losses_hand_computed():
    e = torch.eye(4)
    ortho = torch.stack([e[:2], e[2:]])  # (B=2, L=2, D=4): every cosine is 0
    intra, inter = hinge_losses(ortho, 0.1, 0.25)
    assert float(intra) == 0.0 and float(inter) == 0.0
    below = torch.tensor([[[1.0, 0.0], [0.09, (1 - 0.09 ** 2) ** 0.5]]])  # one item, cosine 0.09 < alpha_intra
    assert float(hinge_losses(below, 0.1, 0.25)[0]) == 0.0
    cos = 0.5  # two positions at cosine 0.5 in each of 3 items; items mutually orthogonal per position
    x = torch.zeros(3, 2, 6)
    for i in range(3):
        x[i, 0, 2 * i] = 1.0
        x[i, 1, 2 * i], x[i, 1, 2 * i + 1] = cos, (1 - cos ** 2) ** 0.5
    intra, inter = hinge_losses(3.0 * x, 0.1, 0.25)  # scale does not matter (normalized)
    assert float(intra) == pytest.approx((cos - 0.1) ** 2)
    assert float(inter) == 0.0
    same = torch.ones(4, 2, 3)  # every vector identical: every cosine is 1
    intra, inter = hinge_losses(same, 0.1, 0.25)
    assert float(intra) == pytest.approx(0.9 ** 2) and float(inter) == pytest.approx(0.75 ** 2)


def test_examples_skip_missing_values_and_reject_unknown_columns():
    tok = tiny_tokenizer(VOCAB)
    items = make_items()
    ex = build_examples(items, tok, ["title", "genres", "year"], 4)
    assert ex.skipped == {"title": 0, "genres": sum(len(g) == 0 for g in items["genres"]), "year": 1}
    assert ex.num_examples == 3 * len(items) - sum(ex.skipped.values())
    assert max(map(len, ex.content)) <= 4
    t, prompt, answer = ex.tasks[1][1]
    assert tok.decode(answer).split() == " , ".join(items["genres"][1]).split()
    with pytest.raises(ValueError, match="palette.tasks: items.parquet has no column 'description'"):
        build_examples(items, tok, ["title", "description"], 8)


def test_collator_targets_are_the_answer_tokens_and_packing_is_block_diagonal():
    net, tok, ex, collate = make_net()
    batch = collate([0, 1, 2])
    for k, o in enumerate(batch["task_owner"].tolist()):
        t, prompt, answer = next(x for x in ex.tasks[o] if x[0] == int(batch["task_index"][k]))
        r, c = int(batch["ldp_row"][k, 0]), int(batch["ldp_col"][k, 0])
        n = net.length + len(prompt) + len(answer)
        tgt = batch["task_targets"][r, c:c + n]
        assert tgt[tgt != IGNORE].tolist() == answer  # the answer tokens, nothing else
        assert tgt[net.length + len(prompt) - 1:n - 1].tolist() == answer
    p = pack([[5, 6, 7], [8, 9], [4, 4, 4, 4]], [0, 10, 3], row_tokens=5, pad_id=0)
    assert p["row"].tolist() == [0, 0, 1] and p["col"].tolist() == [0, 3, 0]
    assert p["pos"][0].tolist() == [0, 1, 2, 10, 11] and p["pos"][1].tolist() == [3, 4, 5, 6, 0]
    allowed = p["allowed"][0, 0].int()
    assert allowed[3].tolist() == [0, 0, 0, 1, 0] and allowed[4].tolist() == [0, 0, 0, 1, 1]
    assert p["allowed"][1, 0, 4].int().tolist() == [0, 0, 0, 0, 1]  # padding attends to itself only


def test_task_draw_is_seeded():
    net, tok, ex, _ = make_net()
    draws = [PaletteCollator(ex, net.lap_ids, net.ldp_ids, tok.pad_token_id, 1, seed)([0, 1, 2, 3, 4])["task_index"]
             for seed in (3, 3, 4)]
    assert torch.equal(draws[0], draws[1]) and len(draws[0]) == 5
    assert not all(torch.equal(d, draws[0]) for d in [PaletteCollator(ex, net.lap_ids, net.ldp_ids,
                   tok.pad_token_id, 1, s)(list(range(12)))["task_index"] for s in range(5)])


def _tiny_cfg(**kw) -> PaletteConfig:
    base = dict(epochs=4, batch_size=6, lr=0.01, eval_items=12, mixed_precision="no", row_tokens=64, lora_dropout=0.0)
    return PaletteConfig(**{**base, **kw})


def test_learning_lowers_the_generation_loss_and_is_deterministic():
    runs = []
    for _ in range(2):
        tok = tiny_tokenizer(VOCAB)
        res = learn_palette(tiny_llama(len(tok)), tok, make_items(), _tiny_cfg(), length=3, lora_rank=4, seed=1)
        runs.append(res)
    m = runs[0].metrics
    assert m["after_gen"] < m["before_gen"]
    assert all(0 <= m[f"after_acc_{t}"] <= 1 for t in ("title", "genres", "year"))
    assert runs[0].vectors.shape == (12, 3, 32) and runs[0].vectors.dtype == np.float32
    np.testing.assert_array_equal(runs[0].vectors, runs[1].vectors)
    # the merged model encodes the same palettes the returned vectors hold
    tok = tiny_tokenizer(VOCAB)
    tok.add_tokens(palette_mod.lap_token_names(3) + palette_mod.ldp_token_names(3), special_tokens=True)
    ex = build_examples(make_items(), tok, ["title"], 64)
    net = PaletteNet(runs[0].model, runs[0].lap_ids, runs[0].ldp_ids)
    again = encode_palette(net, PaletteCollator(ex, runs[0].lap_ids, runs[0].ldp_ids, tok.pad_token_id), 12, 5)
    np.testing.assert_allclose(again, runs[0].vectors, atol=1e-5)


def test_stage_end_to_end(tmp_path):
    items = make_items()
    items.to_parquet(tmp_path / "items.parquet")
    write_tiny_llm(tmp_path / "base", VOCAB)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["palette"].update(epochs=1, batch_size=4, eval_items=4, mixed_precision="no", row_tokens=64)
    params["lora_rank"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "stages" / "palette.py"), "--params", "params.yaml", "--base", "base",
           "--items", "items.parquet", "--out", "data/palette", "--model-dir", "models/palette",
           "--metrics", "metrics/palette.json", "--plots", "plots/palette"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    vec = np.load(tmp_path / "data/palette/vectors.npy")
    info = json.loads((tmp_path / "data/palette/vectors.json").read_text())
    assert vec.shape == (12, params["palette_length"], 32) and vec.dtype == np.float32
    assert (info["L"], info["D"], info["items"], info["tasks"]) == (4, 32, 12, ["title", "genres", "year"])
    metrics = json.loads((tmp_path / "metrics/palette.json").read_text())
    for key in ("train_gen", "train_intra", "train_inter", "examples", "runtime_s", "peak_rss_mb"):
        assert key in metrics
    model, tok, meta = load_llm(tmp_path / "models/palette")
    assert tok.convert_tokens_to_ids(palette_mod.lap_token_names(4)) == meta["lap_token_ids"]
    assert model.get_input_embeddings().weight.shape[0] >= max(meta["ldp_token_ids"]) + 1
    curve = (tmp_path / "plots/palette/plots/metrics/train/gen.tsv").read_text().splitlines()
    assert len(curve) == 1 + metrics["steps"]  # header + one row per training step
    bad = dict(params, palette={**params["palette"], "tasks": ["title", "plot"]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "no column 'plot'" in res.stderr


@pytest.mark.parametrize("section, key, value, match", [
    ("palette", "batch_size", 1, "`palette.batch_size` must be >= 2"),
    ("palette", "tasks", [], "`palette.tasks` must be a non-empty list"),
    ("palette", "mixed_precision", "fp8", "`palette.mixed_precision` must be no or bf16"),
    ("palette", "alpha_inter", 1.5, "`palette.alpha_inter` must be a cosine margin"),
    ("palette", "temperature", 0.1, "unknown key `palette.temperature`"),
    ("lamia", "pca_dim", 0, "`lamia.pca_dim` must be >= 1"),
])
def test_bad_params_name_the_key(tmp_path, section, key, value, match):
    from sidrec.config import ParamsError, load_params

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=match):
        load_params(tmp_path / "params.yaml")
