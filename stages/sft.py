"""Stage sft@<tokenizer>: LoRA instruction tuning of the CPT model on "User history: ... [Constraint: Suggest a
{genre} movie.] Recommendation: {target SID}" prompts from train histories, loss on the target's SID tokens only;
adapters merged -> models/llm/<tokenizer>/sft. Validation NDCG@10 (a seeded sample of validation cases) is reported."""
import argparse
import logging

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState

from sidrec.config import load_params
from sidrec.corpus.build import sft_examples
from sidrec.corpus.prompts import PromptCodec
from sidrec.data.sequences import make_cases
from sidrec.evaluate.accuracy import validation_score
from sidrec.io import StageClock, read_json, setup_logging, write_json
from sidrec.models.llm import (LLMRecommender, LoraSettings, TrainSettings, load_llm, save_llm, sft_batch,
                               train_lm, with_lora)
from sidrec.recommend import DecodeSettings
from sidrec.tokenizers.sids import SidTable

log = logging.getLogger("stages.sft")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cpt", required=True, help="models/llm/<tokenizer>/cpt")
    ap.add_argument("--sids", required=True)
    ap.add_argument("--items", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--out", required=True, help="models/llm/<tokenizer>/sft")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plots", required=True)
    args = ap.parse_args()
    setup_logging()
    clock = StageClock()
    p = load_params(args.params)
    model, tok, meta = load_llm(args.cpt)
    sids, items, events = SidTable.load(args.sids), pd.read_parquet(args.items), pd.read_parquet(args.events)
    ids = np.asarray(meta["sid_token_ids"])
    codec = PromptCodec(tok, ids, sids, items["title"].astype(str).tolist(), meta["noun"])
    s = p.sft
    train, counts = sft_examples(codec, events, items["genres"].tolist(), p.llm.max_history, s.max_examples,
                                 s.constraint_share, p.seed)
    log.info("sft examples: %s", counts)
    torch.manual_seed(p.seed)  # LoRA's initialization draws from the global generator
    lm = with_lora(model, ids, LoraSettings(p.lora_rank, p.llm.lora_alpha, p.llm.lora_dropout))
    trainable = sum(t.numel() for t in lm.parameters() if t.requires_grad)
    stats = train_lm(lm, train, lambda b: sft_batch(b, tok.pad_token_id, codec.positions),
                     TrainSettings(s.epochs, s.batch_size, s.lr, p.seed, p.llm.mixed_precision,
                                   group_by_length=p.llm.group_by_length), args.plots)
    if not PartialState().is_main_process:  # under accelerate launch, rank 0 validates and writes the outputs
        return
    model = lm.merge_and_unload().eval()
    meta = {**meta, "max_history": p.llm.max_history, "mixed_precision": p.llm.mixed_precision}
    cold = set(read_json(args.split)["cold_start_items"])
    valid = make_cases(events, "valid", p.llm.max_history, cold, s.valid_cases, p.seed)
    decode = DecodeSettings(p.eval.beam_size, p.eval.batch_size, p.eval.exclude_seen)
    score = validation_score(LLMRecommender(model, codec, p.llm.max_history, decode, p.llm.mixed_precision), valid,
                             p.eval.k)
    save_llm(args.out, model, tok, meta)
    write_json(args.metrics, clock.stamp({
        "valid_ndcg@10": score[f"ndcg@{p.eval.k}"], "valid_recall@10": score[f"recall@{p.eval.k}"],
        "valid_cases": len(valid), **counts, "trainable_parameters": trainable,
        "train_loss": stats.get("train_loss"), "train_samples_per_s": stats.get("train_samples_per_second")}))
    log.info("saved %s (valid ndcg@10 %.4f)", args.out, score[f"ndcg@{p.eval.k}"])


if __name__ == "__main__":
    main()
