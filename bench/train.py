"""Benchmark: training throughput of sidrec's loops next to a plain HF `Trainer` on the same model and batches.

- GPT: `sidrec.train.fit` (the loop every torch model of sidrec trains with) vs `transformers.Trainer`, each on a
  freshly initialized GPT-2-config decoder of params.yaml's `gpt` section, the same sliding windows, the same
  collate, batch size, learning rate, schedule and mixed precision.
- LLM SFT: the sft stage's batches (left padding, the vocabulary-sized output layer computed only for the target's
  positions: `logits_to_keep`) vs the common SFT recipe (right padding, logits for every position, prompt tokens
  masked out of the labels), both through the same HF `Trainer` and the same LoRA adapter on the CPT checkpoint.

Throughput is tokens/s over the real (non-padding) tokens of the batches. Both sides of a pair run the same number
of optimizer steps after the same warm-up. Not a test: it prints figures.

    python bench/train.py                                   # GPT on data/sids/rqvae.parquet, SFT on models/llm/rqvae/cpt
    python bench/train.py --steps 60 --tokenizer plum --llm models/llm/plum/cpt
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sidrec.config import load_params
from sidrec.data.sequences import sliding_windows, train_sequences
from sidrec.models.gpt import GPTArch, GPTRecommender, SequenceCodec, build_gpt
from sidrec.models.llm import TrainSettings, train_lm
from sidrec.models.search import grid
from sidrec.tokenizers.sids import SidTable
from sidrec.train import LoopConfig, fit


def timed_trainer(model, data: list, collate, settings) -> float:
    """Seconds for one epoch over `data` through `train_lm`, i.e. a plain `transformers.Trainer`."""
    start = time.perf_counter()
    train_lm(model, data, collate, settings)
    return time.perf_counter() - start


def real_tokens(data: list, collate, batch_size: int) -> int:
    """Non-padding tokens over `data` batched as the loops batch it."""
    return int(sum(int(collate(data[i:i + batch_size])["attention_mask"].sum())
                   for i in range(0, len(data), batch_size)))


def report(label: str, steps: int, batch_size: int, tokens: int, t_ours: float, t_hf: float) -> dict:
    out = {"tokens_per_s_sidrec": tokens / t_ours, "tokens_per_s_hf": tokens / t_hf, "ratio": t_hf / t_ours}
    print(f"[{label}] {steps} steps x batch {batch_size}, {tokens} real tokens, torch threads {torch.get_num_threads()}")
    print(f"  sidrec         : {t_ours:7.2f} s  {out['tokens_per_s_sidrec']:9.0f} tokens/s")
    print(f"  HF Trainer     : {t_hf:7.2f} s  {out['tokens_per_s_hf']:9.0f} tokens/s")
    print(f"  ratio          : {out['ratio']:.2f}x")
    return out


def bench_gpt(args, p) -> dict:
    """sidrec's `fit` vs HF Trainer on the first grid configuration of params.yaml's `gpt` section."""
    sids, events = SidTable.load(args.sids), pd.read_parquet(args.events)
    g = grid(p.gpt, p.gpt.search)[0]
    codec = SequenceCodec(sids)
    windows = sliding_windows(train_sequences(events), p.eval.max_history + 1, g.window_stride)
    rng = np.random.default_rng(args.seed)
    n = (args.steps + args.warmup) * g.batch_size
    data = [windows[i] for i in rng.choice(len(windows), size=min(n, len(windows)), replace=False)]
    warm, data = data[:args.warmup * g.batch_size], data[args.warmup * g.batch_size:]
    steps = -(-len(data) // g.batch_size)
    arch = GPTArch(g.n_layer, g.n_head, g.n_embd, g.dropout, p.eval.max_history)
    print(f"GPT {g.n_layer} layers x {g.n_embd}, vocab {codec.layout.vocab_size}, {len(windows)} windows "
          f"({args.sids}), mixed precision {g.mixed_precision}")

    def fresh() -> GPTRecommender:
        torch.manual_seed(args.seed)
        return GPTRecommender(build_gpt(arch, codec.layout, codec.max_positions(arch.max_history)), codec, arch)

    def ours(rec, batch) -> float:
        loop = LoopConfig(epochs=1, batch_size=g.batch_size, lr=g.lr, weight_decay=g.weight_decay,
                          warmup_ratio=g.warmup_ratio, seed=args.seed, mixed_precision=g.mixed_precision)
        start = time.perf_counter()
        fit(rec, batch, loop, collate_fn=codec.collate)
        return time.perf_counter() - start

    if warm:  # allocator and kernel selection: paid once per process, kept out of both timings
        ours(fresh(), warm)
    t_ours = ours(fresh(), data)
    t_hf = timed_trainer(fresh().model, data, codec.collate, TrainSettings(
        1, g.batch_size, g.lr, args.seed, g.mixed_precision, g.warmup_ratio, g.weight_decay, logging_steps=10 ** 6))
    return report("gpt", steps, g.batch_size, real_tokens(data, codec.collate, g.batch_size), t_ours, t_hf)


def full_logits_batch(seqs: list[list[int]], pad_id: int, target_len: int) -> dict:
    """The common SFT batch: right padding, logits at every position, labels = the target's tokens only."""
    from sidrec.models.llm import IGNORE, pad_right

    batch = pad_right(seqs, pad_id)
    labels = torch.full_like(batch["input_ids"], IGNORE)
    for i, s in enumerate(seqs):
        labels[i, len(s) - target_len:len(s)] = batch["input_ids"][i, len(s) - target_len:len(s)]
    batch["labels"] = labels
    return batch


def bench_sft(args, p) -> dict | None:
    """The sft stage's batches vs full-logits batches, through the same HF Trainer and LoRA adapter."""
    from sidrec.corpus.build import sft_examples
    from sidrec.corpus.prompts import PromptCodec
    from sidrec.models.llm import LoraSettings, load_llm, sft_batch, with_lora

    if not Path(args.llm).is_dir():
        print(f"[sft] skipped: no LLM checkpoint at {args.llm} (run `dvc repro cpt@rqvae` or pass --llm)")
        return None
    sids, events = SidTable.load(args.sids), pd.read_parquet(args.events)
    items = pd.read_parquet(args.items)
    s = p.sft
    n = (args.sft_steps + args.warmup) * s.batch_size

    def fresh():
        model, tok, meta = load_llm(args.llm)
        ids = np.asarray(meta["sid_token_ids"])
        codec = PromptCodec(tok, ids, sids, items["title"].astype(str).tolist(), meta["noun"])
        torch.manual_seed(args.seed)
        return with_lora(model, ids, LoraSettings(p.lora_rank, p.llm.lora_alpha, p.llm.lora_dropout)), tok, codec

    lm, tok, codec = fresh()
    examples, _ = sft_examples(codec, events, items["genres"].tolist(), p.llm.max_history, n, s.constraint_share,
                               args.seed)
    warm, data = examples[:args.warmup * s.batch_size], examples[args.warmup * s.batch_size:]
    steps = -(-len(data) // s.batch_size)
    ours_collate = lambda b: sft_batch(b, tok.pad_token_id, codec.positions)  # noqa: E731
    plain_collate = lambda b: full_logits_batch(b, tok.pad_token_id, codec.positions)  # noqa: E731
    print(f"LLM {args.llm}: {sum(t.numel() for t in lm.parameters()) / 1e6:.0f}M parameters, LoRA rank "
          f"{p.lora_rank}, mean example {np.mean([len(e) for e in data]):.0f} tokens, mixed precision "
          f"{p.llm.mixed_precision}")
    settings = TrainSettings(1, s.batch_size, s.lr, args.seed, p.llm.mixed_precision, logging_steps=10 ** 6)
    if warm:
        train_lm(lm, warm, ours_collate, settings)
        lm, _, _ = fresh()
    t_ours = timed_trainer(lm, data, ours_collate, settings)
    lm, _, _ = fresh()
    t_hf = timed_trainer(lm, data, plain_collate, settings)
    return report("sft", steps, s.batch_size, real_tokens(data, plain_collate, s.batch_size), t_ours, t_hf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--tokenizer", default="rqvae", help="the GPT runs over data/sids/<tokenizer>.parquet")
    ap.add_argument("--sids", help="SID table of the GPT benchmark (default: data/sids/<tokenizer>.parquet)")
    ap.add_argument("--events", default="data/prepared/events.parquet")
    ap.add_argument("--items", default="data/prepared/items.parquet")
    ap.add_argument("--llm", help="CPT checkpoint for the SFT benchmark (default: models/llm/<tokenizer>/cpt)")
    ap.add_argument("--steps", type=int, default=100, help="GPT optimizer steps timed per loop")
    ap.add_argument("--sft-steps", type=int, default=15, help="SFT optimizer steps timed per loop")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps run first")
    ap.add_argument("--only", choices=["gpt", "sft"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.sids = args.sids or f"data/sids/{args.tokenizer}.parquet"
    args.llm = args.llm or f"models/llm/{args.tokenizer}/cpt"
    for path in (args.sids, args.events, args.items):
        if not Path(path).exists():
            raise SystemExit(f"error: {path} not found; run `dvc repro tokenize@{args.tokenizer}` first")
    p = load_params(args.params)
    if args.only != "sft":
        bench_gpt(args, p)
    if args.only != "gpt":
        bench_sft(args, p)


if __name__ == "__main__":
    main()
