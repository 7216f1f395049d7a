"""Stage cpt@<tokenizer>: vocabulary surgery (SID tokens at their title-embedding centroids) on models/llm_base, then
continued pre-training on the bilingual corpus (identity sentences both ways + train-history sentences), LoRA with
trainable new-token rows (merged) or full fine-tuning; held-out perplexity before and after -> metrics/cpt_<tok>.json."""
import logging

import pandas as pd
import torch
from accelerate import PartialState

from sidrec.corpus.build import cpt_corpus
from sidrec.corpus.prompts import PromptCodec, item_noun
from sidrec.io import start_stage, write_json
from sidrec.models.llm import (LoraSettings, TrainSettings, add_sid_vocabulary, load_llm, packed_batch, perplexity,
                               save_llm, train_lm, with_lora)
from sidrec.tokenizers.sids import SidTable

log = logging.getLogger("stages.cpt")


def main() -> None:
    args, p, clock = start_stage(__doc__, {"--base": "models/llm_base", "--sids": "data/sids/<tokenizer>.parquet",
                                           "--items": None, "--events": None, "--out": "models/llm/<tokenizer>/cpt",
                                           "--metrics": None, "--plots": None})
    model, tok, _ = load_llm(args.base)
    sids, items, events = SidTable.load(args.sids), pd.read_parquet(args.items), pd.read_parquet(args.events)
    titles = items["title"].astype(str).tolist()
    ids = add_sid_vocabulary(model, tok, sids, titles, p.llm.init_noise, p.seed)
    codec = PromptCodec(tok, ids, sids, titles, item_noun(p.dataset.name))
    c = p.cpt
    train, held, counts = cpt_corpus(codec, events, c.window, c.max_sequences, c.identity_repeats, c.heldout, p.seed)
    log.info("corpus: %s", counts)
    before = perplexity(model, held, tok.pad_token_id, ids)
    log.info("held-out perplexity before CPT: %s", before)
    torch.manual_seed(p.seed)  # LoRA's initialization draws from the global generator
    lm = with_lora(model, ids, LoraSettings(p.lora_rank, p.llm.lora_alpha, p.llm.lora_dropout)) \
        if c.method == "lora" else model
    trainable = sum(t.numel() for t in lm.parameters() if t.requires_grad)
    # padding-free batches: right padding made CPT batches 3.4x longer than their real tokens
    stats = train_lm(lm, train, packed_batch,
                     TrainSettings(c.epochs, c.batch_size, c.lr, p.seed, p.llm.mixed_precision,
                                   group_by_length=p.llm.group_by_length), args.plots)
    if not PartialState().is_main_process:
        return
    model = lm.merge_and_unload() if c.method == "lora" else lm
    after = perplexity(model, held, tok.pad_token_id, ids)
    log.info("held-out perplexity after CPT: %s", after)
    save_llm(args.out, model, tok, {"sid_token_ids": ids.tolist(), "vocab_sizes": sids.vocab_sizes,
                                    "noun": codec.noun, "tokenizer": sids.info.get("tokenizer", args.sids)})
    write_json(args.metrics, clock.stamp({
        "heldout_ppl_before": before["ppl"], "heldout_ppl_after": after["ppl"],
        "heldout_ppl_sid_before": before["ppl_sid"], "heldout_ppl_sid_after": after["ppl_sid"],
        "heldout_tokens": before["tokens"], **counts, "new_tokens": len(ids), "method": c.method,
        "trainable_parameters": trainable, "tokens_processed": counts["train_tokens"] * c.epochs,
        "threads": torch.get_num_threads(), "train_loss": stats.get("train_loss"),
        "train_samples_per_s": stats.get("train_samples_per_second")}))
    log.info("saved %s", args.out)


if __name__ == "__main__":
    main()
