"""Stage sft@<tokenizer>: LoRA instruction tuning of the CPT model on train histories; adapters merged ->
models/llm/<tokenizer>/sft.

`sft.objective: dense` (default): windows "User history: {SID} ... {SID}" with the loss on every item after the
first, beside constrained one-target prompts "User history: ... Constraint: Suggest a {genre} movie.
Recommendation: {target SID}"; `last`: one target per prompt (sidrec.corpus.build). The model is scored on the
GPT's validation cases (eval.valid_cases, same seed) at `sft.checkpoints` log-spaced steps and the best step's
weights are kept; the scores against supervised targets seen are the learning curve in the metrics."""
import logging
import math

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState

from sidrec.corpus.build import sft_examples
from sidrec.corpus.prompts import PromptCodec
from sidrec.data.sequences import make_cases
from sidrec.evaluate.accuracy import validation_score
from sidrec.io import read_json, start_stage, write_json
from sidrec.models.llm import (LLMRecommender, LoraSettings, TrainSettings, ValidationCheckpoints, checkpoint_steps,
                               load_llm, save_llm, sft_batch, sft_dense_batch, train_lm, with_lora)
from sidrec.recommend import DecodeSettings
from sidrec.tokenizers.sids import SidTable

log = logging.getLogger("stages.sft")


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--cpt": "models/llm/<tokenizer>/cpt", "--sids": None, "--items": None,
                                           "--events": None, "--split": None, "--out": "models/llm/<tokenizer>/sft",
                                           "--metrics": None, "--plots": None})
    model, tok, meta = load_llm(args.cpt)
    sids, items, events = SidTable.load(args.sids), pd.read_parquet(args.items), pd.read_parquet(args.events)
    ids = np.asarray(meta["sid_token_ids"])
    s = p.sft
    codec = PromptCodec(tok, ids, sids, items["title"].astype(str).tolist(), meta["noun"], s.objective)
    train, tails, counts = sft_examples(codec, events, items["genres"].tolist(), p.llm.max_history, s.max_examples,
                                        s.constraint_share, p.seed, s.objective)
    log.info("sft examples: %s", counts)
    cold = set(read_json(args.split)["cold_start_items"])
    valid = make_cases(events, "valid", p.llm.max_history, cold, p.eval.valid_cases, p.seed)
    decode = DecodeSettings(p.eval.beam_size, p.eval.batch_size, p.eval.exclude_seen)
    k = p.eval.k
    torch.manual_seed(p.seed)  # LoRA's initialization draws from the global generator
    lm = with_lora(model, ids, LoraSettings(p.lora_rank, p.llm.lora_alpha, p.llm.lora_dropout))
    trainable = sum(t.numel() for t in lm.parameters() if t.requires_grad)
    state = PartialState()
    total_steps = math.ceil(len(train) / (s.batch_size * state.num_processes)) * s.epochs
    steps = checkpoint_steps(total_steps, s.checkpoints)

    def score(m) -> dict:
        res = validation_score(LLMRecommender(m, codec, p.llm.max_history, decode, p.llm.mixed_precision), valid, k)
        return {f"valid_ndcg@{k}": res[f"ndcg@{k}"], f"valid_recall@{k}": res[f"recall@{k}"]}

    checkpoints = ValidationCheckpoints(lm, steps if state.is_main_process else [], score, f"valid_ndcg@{k}")
    if s.objective == "dense":
        collate = lambda b, t: sft_dense_batch(b, t, tok.pad_token_id)  # noqa: E731
    else:
        collate = lambda b, t: sft_batch(b, tok.pad_token_id, codec.positions)  # noqa: E731
    stats = train_lm(lm, train, collate, TrainSettings(s.epochs, s.batch_size, s.lr, p.seed, p.llm.mixed_precision,
                                                       group_by_length=p.llm.group_by_length),
                     args.plots, tails=tails, callbacks=[checkpoints])
    if not state.is_main_process:  # under accelerate launch, rank 0 validates and writes the outputs
        return
    best = checkpoints.restore()
    model = lm.merge_and_unload().eval()
    meta = {**meta, "max_history": p.llm.max_history, "mixed_precision": p.llm.mixed_precision,
            "objective": s.objective}
    save_llm(args.out, model, tok, meta)
    per_step = counts["targets"] * s.epochs / total_steps  # targets are spread evenly over the shuffled steps
    curve = [{**row, "targets": int(round(row["step"] * per_step))} for row in checkpoints.curve]
    write_json(args.metrics, clock.stamp({
        f"valid_ndcg@{k}": best[f"valid_ndcg@{k}"], f"valid_recall@{k}": best[f"valid_recall@{k}"],
        "valid_cases": len(valid), "best_step": best["step"],
        "steps": total_steps, "targets_seen": int(round(best["step"] * per_step)),
        "targets_per_epoch": counts["targets"], "tokens_processed": counts["tokens"] * s.epochs,
        "history_length": p.llm.max_history, **counts, "trainable_parameters": trainable,
        "threads": torch.get_num_threads(), "curve": curve,
        "train_loss": stats.get("train_loss"), "train_samples_per_s": stats.get("train_samples_per_second")}))
    log.info("saved %s (best step %d of %d, valid ndcg@10 %.4f)", args.out, best["step"], total_steps,
             best[f"valid_ndcg@{k}"])

if __name__ == "__main__":
    main()
