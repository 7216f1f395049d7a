"""Benchmark: sidrec's trie-constrained beam search (shared prefill, tree-attention decode) vs HF `generate`.

Both decoders run on the same prompts with the same model (beam 10, top 10), each after one warm-up call on
8 prompts; the script prints the share of cases whose top-k item sets agree, cases/s of each decoder and the
speed ratio. Not a test: it prints figures.

    python bench/beam.py [--model DIR] [--sids data/sids/rqvae.parquet] [--cases 200] [--history 20]
    python bench/beam.py --llm models/llm/plum/sft --sids data/sids/plum.parquet --history 10   # the LLM path
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the reference decoder lives with the tests, outside the library

from hf_reference import hf_generate_topk  # noqa: E402
from sidrec.generate import ItemTrie, beam_search  # noqa: E402
from sidrec.tokenizers.sids import SidTable, TokenLayout, add_collision_suffix  # noqa: E402


def load_catalogue(path: Path, seed: int) -> SidTable:
    """The SID table at `path`, else 1682 random items x 3 levels x 256 codes + collision suffix."""
    if path.exists():
        return SidTable.load(path)
    codes = add_collision_suffix(np.random.default_rng(seed).integers(0, 256, size=(1682, 3)))
    return SidTable(codes, [256, 256, 256, int(codes[:, -1].max()) + 1], {"source": "random"})


def make_prompts(item_tokens: np.ndarray, cases: int, history: int, bos: int, sep: int,
                 seed: int) -> list[list[int]]:
    """Random histories: [BOS] then, per item, its tokens followed by [SEP].

    Args:
        item_tokens: (N, P) token ids of the catalogue.
        cases: number of prompts.
        history: items per prompt.
        bos, sep: ids of the [BOS] and [SEP] tokens.
        seed: seed of the item draw.
    Returns:
        `cases` token-id lists of length 1 + history * (P + 1).
    """
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(cases):
        rows = item_tokens[rng.choice(len(item_tokens), size=history, replace=False)]  # (history, P)
        body = np.concatenate([rows, np.full((history, 1), sep)], axis=1).reshape(-1)
        prompts.append([bos] + body.tolist())
    return prompts


def run(model, prompts: list[list[int]], trie: ItemTrie, pad_token_id: int, label: str,
        beam_size: int = 10, k: int = 10, batch_size: int = 64) -> dict:
    """Time both decoders on the same prompts and print their agreement and throughput.

    Args:
        model: an HF causal LM whose vocabulary holds the trie's tokens.
        prompts: token-id lists.
        trie: the catalogue's item trie.
        pad_token_id: id for left padding.
        label: name printed with the figures.
        beam_size, k, batch_size: decoding settings (batch_size in cases, for sidrec).
    Returns:
        dict with cases/s of each decoder, the speed ratio and the share of identical top-k sets.
    """
    warm = prompts[:8]  # first calls pay one-off allocator and kernel-selection costs: keep them out of both timings
    beam_search(model, warm, trie, beam_size=beam_size, k=k, batch_size=batch_size, pad_token_id=pad_token_id)
    hf_generate_topk(model, warm, trie, beam_size=beam_size, k=k, pad_token_id=pad_token_id)
    start = time.perf_counter()
    ours, ours_scores = beam_search(model, prompts, trie, beam_size=beam_size, k=k, batch_size=batch_size,
                                    pad_token_id=pad_token_id)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    ref, ref_scores = hf_generate_topk(model, prompts, trie, beam_size=beam_size, k=k, pad_token_id=pad_token_id)
    t_hf = time.perf_counter() - start
    same = np.mean([set(a.tolist()) == set(b.tolist()) for a, b in zip(ours, ref)])
    top1_gap = float(np.abs(ours_scores[:, 0] - ref_scores[:, 0]).max())
    out = {"cases_per_s_sidrec": len(prompts) / t_ours, "cases_per_s_hf": len(prompts) / t_hf,
           "speedup": t_hf / t_ours, "identical_topk_sets": float(same), "max_top1_score_gap": top1_gap}
    print(f"[{label}] {len(prompts)} cases, beam {beam_size}, top {k}")
    print(f"  sidrec beam_search : {t_ours:7.2f} s  {out['cases_per_s_sidrec']:8.1f} cases/s")
    print(f"  HF generate        : {t_hf:7.2f} s  {out['cases_per_s_hf']:8.1f} cases/s")
    print(f"  speed ratio        : {out['speedup']:.1f}x")
    print(f"  identical top-{k} sets: {same:.1%}   max |top-1 score gap|: {top1_gap:.2e}")
    return out


def run_llm(args, table: SidTable) -> None:
    """The same comparison on an LLM after vocabulary surgery, with the recommendation prompts of the LLM path."""
    from sidrec.corpus.prompts import PromptCodec
    from sidrec.models.llm import load_llm

    model, tok, meta = load_llm(args.llm)
    codec = PromptCodec(tok, np.asarray(meta["sid_token_ids"]), table, [""] * table.num_items, meta.get("noun", "item"))
    rng = np.random.default_rng(args.seed)
    prompts = [codec.prompt(rng.choice(table.num_items, size=args.history, replace=False).tolist())
               for _ in range(args.cases)]
    print(f"LLM {args.llm}: {sum(t.numel() for t in model.parameters()) / 1e6:.0f}M parameters, catalogue "
          f"{table.num_items} items x {codec.positions} tokens, prompt length {len(prompts[0])}, "
          f"torch threads {torch.get_num_threads()}")
    run(model, prompts, ItemTrie(codec.item_tokens), tok.pad_token_id, "llm", batch_size=args.batch_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GPT2LMHeadModel directory; default: a random 4-layer GPT-2")
    ap.add_argument("--llm", help="an LLM directory written by the cpt/sft stages (its SID table: --sids)")
    ap.add_argument("--sids", default="data/sids/rqvae.parquet", help="SID table; random codes if missing")
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    table = load_catalogue(Path(args.sids), args.seed)
    if args.llm:
        run_llm(args, table)
        return
    layout = TokenLayout(table.vocab_sizes)
    item_tokens = layout.item_tokens(table.codes)  # (N, P)
    prompts = make_prompts(item_tokens, args.cases, args.history, layout.bos, layout.sep, args.seed)
    if args.model:
        model = GPT2LMHeadModel.from_pretrained(args.model)
    else:
        torch.manual_seed(args.seed)
        n_positions = 64 * ((len(prompts[0]) + item_tokens.shape[1]) // 64 + 1)
        model = GPT2LMHeadModel(GPT2Config(n_layer=4, n_head=4, n_embd=128, vocab_size=layout.vocab_size,
                                           n_positions=n_positions, bos_token_id=layout.bos,
                                           eos_token_id=layout.eos, pad_token_id=layout.pad))
    if model.config.vocab_size < layout.vocab_size:
        raise SystemExit(f"model vocabulary {model.config.vocab_size} < layout vocabulary {layout.vocab_size}")
    model.eval()
    print(f"catalogue: {table.num_items} items x {item_tokens.shape[1]} tokens ({table.info.get('source', args.sids)}),"
          f" prompt length {len(prompts[0])}, torch threads {torch.get_num_threads()}")
    run(model, prompts, ItemTrie(item_tokens), layout.pad, "gpt", batch_size=args.batch_size)


if __name__ == "__main__":
    main()
