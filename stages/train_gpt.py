"""Stage train@<tokenizer>-gpt: a GPT-2-config decoder from scratch over a tokenizer's IDs, sliding windows of
train histories, early stopping on validation NDCG@10, an optional grid search; models/gpt/<tokenizer>."""
import dataclasses
import logging
import math

import pandas as pd
import torch
from accelerate import PartialState
from dvclive import Live

from sidrec.data.sequences import make_cases, sliding_windows, train_sequences
from sidrec.evaluate.accuracy import validation_score
from sidrec.io import read_json, start_stage, write_json
from sidrec.models.gpt import GPTArch, GPTRecommender, SequenceCodec, build_gpt
from sidrec.models.search import grid
from sidrec.recommend import DecodeSettings
from sidrec.tokenizers.sids import SidTable
from sidrec.train import LoopConfig, fit

log = logging.getLogger("stages.train_gpt")


def targets_per_step(windows, batch_size: int) -> float:
    """Supervised next-item targets per optimizer step: every window item after the first is one."""
    return sum(len(w) - 1 for w in windows) / math.ceil(len(windows) / batch_size)


def train_one(g, p, codec, windows, valid, decode):
    torch.manual_seed(g.seed)
    per_step = targets_per_step(windows, g.batch_size)
    eval_at = tuple(sorted({max(1, int(round(t / per_step))) for t in g.curve_targets}))
    arch = GPTArch(g.n_layer, g.n_head, g.n_embd, g.dropout, p.eval.max_history)
    rec = GPTRecommender(build_gpt(arch, codec.layout, codec.max_positions(arch.max_history)), codec, arch, decode)
    loop = LoopConfig(epochs=g.epochs, batch_size=g.batch_size, lr=g.lr, weight_decay=g.weight_decay,
                      warmup_ratio=g.warmup_ratio, eval_every=g.eval_every, patience=g.patience, seed=g.seed,
                      mixed_precision=g.mixed_precision, eval_at=eval_at)
    res = fit(rec, windows, loop, collate_fn=codec.collate, evaluate=lambda m: validation_score(m, valid, p.eval.k))
    return rec, res


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--sids": None, "--events": None, "--split": None,
                                           "--out": "model directory", "--metrics": None, "--plots": None})
    sids, events = SidTable.load(args.sids), pd.read_parquet(args.events)
    cold = set(read_json(args.split)["cold_start_items"])
    codec = SequenceCodec(sids)
    decode = DecodeSettings(p.eval.beam_size, p.eval.batch_size, p.eval.exclude_seen)
    windows = sliding_windows(train_sequences(events), p.eval.max_history + 1, p.gpt.window_stride)
    valid = make_cases(events, "valid", p.eval.max_history, cold, p.eval.valid_cases, p.seed)
    log.info("%d training windows, %d validation cases, vocab %d", len(windows), len(valid), codec.layout.vocab_size)
    best, table = None, {}
    for g in grid(p.gpt, p.gpt.search):
        rec, res = train_one(g, p, codec, windows, valid, decode)
        name = ",".join(f"{k}={getattr(g, k)}" for k in sorted(p.gpt.search)) or "default"
        table[name] = res.best_score
        log.info("config %s: valid ndcg@10 %.4f (best epoch %d)", name, res.best_score, res.best_epoch)
        if best is None or res.best_score > best[1].best_score:
            best = (rec, res, g)
    rec, res, g = best
    if not PartialState().is_main_process:  # under accelerate launch, rank 0 writes the outputs
        return
    with Live(dir=args.plots, dvcyaml=None, save_dvc_exp=False) as live:
        for row in res.history:
            for k, v in row.items():
                if k != "epoch":
                    live.log_metric(k, v)
            live.next_step()
    rec.save(args.out, {"chosen": dataclasses.asdict(g), "valid_ndcg@10": res.best_score})
    n_params = sum(t.numel() for t in rec.model.parameters())
    per_step = targets_per_step(windows, g.batch_size)
    per_epoch = sum(len(w) - 1 for w in windows)
    steps_per_epoch = math.ceil(len(windows) / g.batch_size)
    k = p.eval.k
    curve = [{"step": r["step"], "targets": int(round(r["step"] * per_step)), f"valid_ndcg@{k}": r[f"ndcg@{k}"],
              f"valid_recall@{k}": r[f"recall@{k}"]} for r in res.curve]
    write_json(args.metrics, clock.stamp({
        "valid_ndcg@10": res.best_score, "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
        "train_windows": len(windows), "parameters": n_params, "trainable_parameters": n_params,
        "targets_per_epoch": per_epoch, "targets_seen": per_epoch * res.best_epoch,
        "targets_processed": int(round(per_step * res.steps)), "runs": len(table),
        "tokens_processed": int(sum(1 + len(w) * (len(sids.vocab_sizes) + 1) for w in windows) * res.epochs_run),
        "steps": res.steps, "steps_per_epoch": steps_per_epoch, "history_length": p.eval.max_history,
        "threads": torch.get_num_threads(), "curve": curve, "search": table,
        "chosen": {k: getattr(g, k) for k in sorted(p.gpt.search)}}))
    log.info("saved %s (%d parameters, valid ndcg@10 %.4f)", args.out, n_params, res.best_score)


if __name__ == "__main__":
    main()
