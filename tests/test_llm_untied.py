"""LoRA on an untied base model (Qwen/Llama style, `tie_word_embeddings=False`): peft's "all-linear" skips
`lm_head`, so `with_lora` makes the new SID rows of the output matrix trainable too; a tied model keeps exactly the
input-embedding rows it had (peft ties `lm_head` to them)."""
from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model

from llm_fixtures import tiny_llama, tiny_tokenizer
from sidrec.corpus.prompts import PromptCodec
from sidrec.models.llm import LoraSettings, add_sid_vocabulary, load_llm, save_llm, sft_batch, with_lora
from test_llm import TITLES, make_sids

LORA = LoraSettings(rank=4, alpha=8, dropout=0.0)


def surgery(tied: bool):
    tok = tiny_tokenizer(TITLES)
    model = tiny_llama(len(tok), tied=tied)
    sids = make_sids()
    ids = add_sid_vocabulary(model, tok, sids, TITLES, noise=0.0, seed=0)
    return model, tok, ids, PromptCodec(tok, ids, sids, TITLES, "movie")


def one_step(lm, tok, codec, lr: float = 0.05) -> None:
    """One AdamW step on a batch whose labels are the target item's SID tokens."""
    torch.manual_seed(0)
    seqs = [codec.prompt([i]) + codec.sid([(i + 1) % len(TITLES)]) for i in range(4)]
    batch = sft_batch(seqs, tok.pad_token_id, len(codec.sid([0])))
    opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=lr)
    lm.train()
    lm(**batch).loss.backward()
    opt.step()
    opt.zero_grad()
    lm.eval()


def test_untied_new_output_rows_train_and_survive_merge_and_save(tmp_path):
    model, tok, ids, codec = surgery(tied=False)
    out_before = model.get_output_embeddings().weight.detach().clone()
    in_before = model.get_input_embeddings().weight.detach().clone()
    old = len(out_before) - len(ids)
    assert sorted(ids.tolist()) == list(range(old, len(out_before)))
    lm = with_lora(model, ids, LORA)
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert any("lm_head" in n and "trainable_tokens" in n for n in trainable), trainable
    assert all("lora_" in n or "trainable_tokens" in n for n in trainable)
    one_step(lm, tok, codec)
    merged = lm.merge_and_unload()
    out, emb = merged.get_output_embeddings().weight.detach(), merged.get_input_embeddings().weight.detach()
    assert out.data_ptr() != emb.data_ptr()  # still untied
    assert torch.equal(out[:old], out_before[:old]) and torch.equal(emb[:old], in_before[:old])
    changed = (out[ids] != out_before[ids]).any(1)
    assert changed.all(), f"{int((~changed).sum())} of {len(ids)} new output rows did not train"
    assert not torch.equal(emb[ids], in_before[ids])
    save_llm(tmp_path / "m", merged, tok, {})
    loaded, _, _ = load_llm(tmp_path / "m")
    assert torch.equal(loaded.get_output_embeddings().weight.detach(), out)
    assert torch.equal(loaded.get_input_embeddings().weight.detach(), emb)


def test_tied_model_trains_exactly_as_before():
    """A tied model: the same trainable parameters as the input-embedding-only config, the same step, still tied."""
    runs = []
    for legacy in (False, True):
        model, tok, ids, codec = surgery(tied=True)
        if legacy:  # the config `with_lora` used before untied models got trainable lm_head rows
            cfg = LoraConfig(r=LORA.rank, lora_alpha=LORA.alpha, lora_dropout=LORA.dropout,
                             target_modules="all-linear", task_type="CAUSAL_LM",
                             trainable_token_indices={"embed_tokens": [int(i) for i in ids]})
            lm = get_peft_model(model, cfg)
        else:
            lm = with_lora(model, ids, LORA)
        params = [(n, p.numel()) for n, p in lm.named_parameters() if p.requires_grad]
        one_step(lm, tok, codec)
        merged = lm.merge_and_unload()
        assert merged.get_output_embeddings().weight.data_ptr() == merged.get_input_embeddings().weight.data_ptr()
        runs.append((params, {k: v.detach().clone() for k, v in merged.state_dict().items()}))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1].keys() == runs[1][1].keys()
    for k in runs[0][1]:
        assert torch.equal(runs[0][1][k], runs[1][1][k]), k
