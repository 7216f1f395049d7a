"""The pretrained-LLM recommender of PLUM (docs/systems.md, PLUM): base model loading, vocabulary surgery with
centroid initialization, LoRA adapters with trainable new-token rows, and trie-constrained decoding.

Vocabulary surgery: one new token `<p{position}_{code}>` per (code position, code) of a SID table (levels and
collision suffix), added to the tokenizer and the embedding matrix. Each new row starts at the centroid of its
cluster, not at random: the mean, over the items that carry that code, of the mean LLM input embedding of the
item's title tokens, plus Gaussian noise of `noise` x the embedding matrix's std (and the same for the output
matrix when it is not tied). A code no item carries starts at the catalogue centroid.

LoRA (peft `LoraConfig`, rank `lora_rank`) trains adapters on every linear layer of the transformer blocks plus
only the new rows of the embedding (`trainable_token_indices`), and of `lm_head` when it is not tied ("all-linear"
skips `lm_head`); after each stage the adapters are merged (`merge_and_unload`) and the full model is written with
`save_pretrained` (safetensors), so every stage's output loads with plain `AutoModelForCausalLM.from_pretrained`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import (AutoModelForCausalLM, AutoTokenizer, GgufConfig, PreTrainedModel, PreTrainedTokenizerBase,
                          TrainerCallback)

from sidrec.assets import embedded_llm_gguf
from sidrec.generate import ItemTrie, TrieRecommender
from sidrec.io import atomic_path
from sidrec.tokenizers.sids import SidTable, TokenLayout

log = logging.getLogger(__name__)
META = "sidrec.json"


def load_base(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`llm.base` -> (float32 causal LM, tokenizer): the embedded SmolLM2 GGUF (dequantized), a local directory,
    or a hub name (read from the local HF cache when offline). Never runs remote code.
    """
    gguf = embedded_llm_gguf(name)
    if gguf is not None:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True))
    else:
        try:
            tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, trust_remote_code=False)
        except OSError as e:
            raise FileNotFoundError(f"llm.base: cannot load {name!r} ({e.__class__.__name__}); use "
                                    "SmolLM2-135M-Instruct (embedded), a local model directory, or a hub name "
                                    "already in the local HF cache") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def load_llm(path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """A directory written by `save_llm` -> (model in eval mode, tokenizer, sidrec metadata)."""
    path = Path(path)
    meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # safetensors
    return model.eval(), AutoTokenizer.from_pretrained(path), meta


def save_llm(path: str | Path, model: PreTrainedModel, tok: PreTrainedTokenizerBase, meta: dict) -> None:
    """Atomically write model (safetensors), tokenizer and sidrec metadata to `path`."""
    with atomic_path(path, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / META).write_text(json.dumps(meta, indent=2))


def sid_token_names(vocab_sizes: list[int]) -> list[str]:
    """`<p{position}_{code}>` for every code position and code, in TokenLayout order (no specials)."""
    return TokenLayout(vocab_sizes).token_names()[: int(sum(vocab_sizes))]


def title_embeddings(model: PreTrainedModel, tok: PreTrainedTokenizerBase, titles: list[str],
                     output: bool = False) -> torch.Tensor:
    """(N, H) mean embedding of each title's tokens, from the input (or output) embedding matrix."""
    weight = (model.get_output_embeddings() if output else model.get_input_embeddings()).weight.detach()
    rows = []
    for title in titles:
        ids = tok(str(title), add_special_tokens=False).input_ids or [tok.eos_token_id]
        rows.append(weight[ids].float().mean(0))
    return torch.stack(rows)


def code_centroids(item_vectors: torch.Tensor, sids: SidTable) -> torch.Tensor:
    """(sum(vocab_sizes), H): per (position, code), the mean of the item vectors that carry it (catalogue mean
    for a code no item carries), in TokenLayout order."""
    layout = TokenLayout(sids.vocab_sizes)
    tokens = torch.from_numpy(layout.item_tokens(sids.codes))  # (N, P)
    n_tok, h = int(sum(sids.vocab_sizes)), item_vectors.shape[1]
    sums = torch.zeros(n_tok, h).index_add_(0, tokens.reshape(-1), item_vectors.repeat_interleave(tokens.shape[1], 0))
    counts = torch.bincount(tokens.reshape(-1), minlength=n_tok).float()[:, None]
    return torch.where(counts > 0, sums / counts.clamp(min=1), item_vectors.mean(0, keepdim=True))


def add_sid_vocabulary(model: PreTrainedModel, tok: PreTrainedTokenizerBase, sids: SidTable, titles: list[str],
                       noise: float, seed: int) -> np.ndarray:
    """Vocabulary surgery in place: add the SID tokens, resize, set every new row to its code centroid + noise.

    Args:
        model, tok: the base LLM and its tokenizer.
        sids: the item SID table (levels + suffix).
        titles: (N,) item titles in item_id order (what the centroids average).
        noise: noise std as a multiple of the embedding matrix's std (0 = exact centroids).
        seed: noise seed.
    Returns:
        (sum(vocab_sizes),) int64 LLM token id of every SID token, in TokenLayout order.
    """
    if len(titles) != sids.num_items:
        raise ValueError(f"llm: {len(titles)} titles for {sids.num_items} items in the SID table")
    names = sid_token_names(sids.vocab_sizes)
    clash = [n for n in names if n in tok.get_vocab()]
    if clash:
        raise ValueError(f"llm: the tokenizer already has SID tokens ({clash[0]}, ...); start from models/llm_base")
    item_in = title_embeddings(model, tok, titles)
    tied = _tied(model)
    item_out = None if tied else title_embeddings(model, tok, titles, output=True)
    tok.add_tokens(names)
    ids = np.asarray(tok.convert_tokens_to_ids(names), dtype=np.int64)
    old_rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(max(old_rows, int(ids.max()) + 1), mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    index = torch.from_numpy(ids)
    with torch.no_grad():
        for matrix, vectors in ((model.get_input_embeddings().weight, item_in),
                                (None if tied else model.get_output_embeddings().weight, item_out)):
            if matrix is None:
                continue
            init = code_centroids(vectors, sids)
            init = init + noise * float(matrix[:old_rows].std()) * torch.randn(init.shape, generator=gen)
            matrix[index] = init.to(matrix.dtype)
    model.config.vocab_size = model.get_input_embeddings().weight.shape[0]
    log.info("vocabulary surgery: %d SID tokens (ids %d..%d), centroid init, tied=%s", len(ids), ids.min(),
             ids.max(), tied)
    return ids


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    dropout: float


def with_lora(model: PreTrainedModel, new_token_ids: np.ndarray, lora: LoraSettings):
    """peft model: LoRA on every linear layer of the blocks + trainable rows for the new tokens only, in the input
    embedding and, when the model is untied (Qwen/Llama style), in `lm_head` too ("all-linear" skips `lm_head`).
    A tied model gets the input-embedding rows only; peft ties `lm_head` to them."""
    if lora.rank > model.config.hidden_size:
        from sidrec.config import ParamsError

        raise ParamsError(f"params: `lora_rank` {lora.rank} exceeds the LLM hidden size {model.config.hidden_size}; "
                          "use a smaller rank")
    rows = [int(i) for i in new_token_ids]
    trainable = {_module_name(model, model.get_input_embeddings()): rows}
    if not _tied(model):  # "all-linear" skips lm_head: the new items' output rows must train too
        trainable[_module_name(model, model.get_output_embeddings())] = rows
    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules="all-linear",
                     trainable_token_indices=trainable, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def _module_name(model: PreTrainedModel, module: torch.nn.Module) -> str:
    """The last component of `module`'s name in `model` (what peft's `trainable_token_indices` keys match)."""
    return next(n for n, m in model.named_modules() if m is module).split(".")[-1]


def _tied(model: PreTrainedModel) -> bool:
    """True when the output matrix is the input embedding matrix (or there is no output matrix)."""
    out = model.get_output_embeddings()
    return out is None or out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


IGNORE = -100


def pad_right(seqs: list[list[int]], pad_id: int) -> dict:
    """Right-padded causal-LM batch; labels = input ids, padding ignored (continued pre-training)."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(s)
        mask[i, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE)}


def packed_batch(seqs: list[list[int]]) -> dict:
    """Padding-free causal-LM batch (continued pre-training): the sequences end to end in one row, position ids
    restarting at each sequence, which transformers turns into a block-diagonal causal mask; each sequence's first
    token is not a target. The loss equals `pad_right`'s (tests/test_llm.py) at the cost of the real tokens only.
    `use_cache=False`: with a cache object transformers skips the packed-sequence mask."""
    from transformers import DataCollatorWithFlattening

    batch = DataCollatorWithFlattening(return_tensors="pt")([{"input_ids": s} for s in seqs])
    return {**batch, "use_cache": False}


def pad_left(seqs: list[list[int]], pad_id: int) -> dict:
    """Left-padded batch with position ids, so every sequence ends at the last column (SFT: the target's tokens);
    the same padding as the decoder's prompts."""
    from sidrec.generate import _left_pad

    ids, mask, pos = _left_pad(seqs, pad_id, torch.device("cpu"))
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos}


def sft_batch(seqs: list[list[int]], pad_id: int, target_len: int) -> dict:
    """Left-padded SFT batch whose loss covers the target's `target_len` SID tokens only: the model computes the
    vocabulary-sized output layer for the last `target_len + 1` positions (`logits_to_keep`), and the labels are
    those positions' tokens (the causal-LM loss shifts them, so the first is never a target)."""
    batch = pad_left(seqs, pad_id)
    batch["labels"] = batch["input_ids"][:, -(target_len + 1):].clone()
    batch["logits_to_keep"] = target_len + 1
    return batch


def sft_dense_batch(seqs: list[list[int]], tails: list[int], pad_id: int) -> dict:
    """Right-padded SFT batch whose loss covers the last `tails[i]` tokens of sequence i (dense examples: every
    item's SID tokens after the first; one-target examples: the target's). Windows are of near-equal length, so
    padding costs little and the attention stays per sequence (a packed row would attend across all of them)."""
    batch = pad_right(seqs, pad_id)
    labels = batch["labels"]
    for i, (s, tail) in enumerate(zip(seqs, tails)):
        labels[i, :len(s) - tail] = IGNORE
    return batch


def checkpoint_steps(total_steps: int, checkpoints: int) -> list[int]:
    """`checkpoints` log-spaced optimizer steps ending at `total_steps` (halving back from it: ..., T/4, T/2, T),
    deduplicated and >= 1."""
    return sorted({max(1, int(round(total_steps / 2 ** i))) for i in range(checkpoints)})


class ValidationCheckpoints(TrainerCallback):
    """A transformers `TrainerCallback` that scores the model on validation at given optimizer steps and keeps a
    copy of the trainable weights (LoRA adapters, new token rows) of the best-scoring step; `restore` loads them.

    Args:
        model: the (peft) model being trained.
        steps: optimizer steps to score at (e.g. `checkpoint_steps`).
        score: model -> dict of validation metrics; `key` is maximized.
    """

    def __init__(self, model, steps: list[int], score, key: str) -> None:
        self.model, self.steps, self.score, self.key = model, set(steps), score, key
        self.curve: list[dict] = []
        self.best: dict | None = None
        self._state: dict[str, torch.Tensor] | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step not in self.steps:
            return control
        was_training = self.model.training
        self.model.eval()
        res = {"step": int(state.global_step), **self.score(self.model)}
        self.model.train(was_training)
        self.curve.append(res)
        log.info("checkpoint step %d: %s", state.global_step, {k: round(v, 4) for k, v in res.items()})
        if self.best is None or res[self.key] > self.best[self.key]:
            self.best = res
            self._state = {n: t.detach().clone() for n, t in self.model.named_parameters() if t.requires_grad}
        return control

    def restore(self) -> dict | None:
        """Load the best step's trainable weights into the model; returns that step's row (None if none ran)."""
        if self._state is not None:
            with torch.no_grad():
                for n, t in self.model.named_parameters():
                    if n in self._state:
                        t.copy_(self._state[n])
        return self.best


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    seed: int
    mixed_precision: str = "no"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    logging_steps: int = 10
    group_by_length: bool = False
    """Batch sequences of similar length together (less padding; HF `LengthGroupedSampler`, still shuffled)."""


def train_lm(model, seqs: list[list[int]], collate, cfg: TrainSettings, plots_dir: str | Path | None = None,
             tails: list[int] | None = None, callbacks: list | None = None) -> dict:
    """HF `Trainer` on token-id lists (AdamW, warmup + cosine, bf16 autocast by setting; runs unchanged under
    `accelerate launch`); per-step loss curves through transformers' DVCLive callback into `plots_dir`.
    `collate(seqs)` builds a batch, or `collate(seqs, tails)` when per-sequence `tails` (loss tokens at the end)
    are given; `callbacks` are extra `TrainerCallback`s (e.g. `ValidationCheckpoints`).

    Returns:
        the Trainer's training metrics (train_loss, train_runtime, train_samples_per_second, ...).
    """
    import tempfile

    from dvclive import Live
    from transformers import Trainer, TrainingArguments
    from transformers.integrations import DVCLiveCallback

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_ratio,
            weight_decay=cfg.weight_decay, bf16=cfg.mixed_precision == "bf16", logging_steps=cfg.logging_steps,
            save_strategy="no", report_to="none", seed=cfg.seed, data_seed=cfg.seed, remove_unused_columns=False,
            dataloader_num_workers=0, disable_tqdm=False, use_cpu=not torch.cuda.is_available(),
            train_sampling_strategy="group_by_length" if cfg.group_by_length else "random")
        callbacks = list(callbacks or [])
        if plots_dir is not None and args.process_index == 0:
            callbacks.append(DVCLiveCallback(live=Live(dir=str(plots_dir), dvcyaml=None, save_dvc_exp=False)))
        # the length-grouped sampler reads each example's "input_ids"; the collate still receives token lists
        if tails is None:
            data = [{"input_ids": s} for s in seqs]
            collator = lambda feats: collate([f["input_ids"] for f in feats])  # noqa: E731
        else:
            data = [{"input_ids": s, "tail": t} for s, t in zip(seqs, tails, strict=True)]
            collator = lambda feats: collate([f["input_ids"] for f in feats], [f["tail"] for f in feats])  # noqa: E731
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks, data_collator=collator)
        out = trainer.train()
        metrics = dict(out.metrics)
        if trainer.accelerator.num_processes > 1:  # transformers leaves the last steps' loss rank-local
            metrics["train_loss"] = float(trainer.accelerator.reduce(
                torch.tensor(metrics["train_loss"], device=trainer.accelerator.device), "mean"))
    return metrics


@torch.inference_mode()
def perplexity(model, seqs: list[list[int]], pad_id: int, focus_ids: np.ndarray, batch_size: int = 32) -> dict:
    """Perplexity of `model` on `seqs`: over every predicted token and over the `focus_ids` (SID) tokens only."""
    model.eval()
    focus = torch.from_numpy(np.asarray(focus_ids, dtype=np.int64))
    nll_all = nll_focus = 0.0
    n_all = n_focus = 0
    for i in range(0, len(seqs), batch_size):
        batch = pad_right(seqs[i:i + batch_size], pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        target = batch["labels"][:, 1:]  # (B, T - 1)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE,
                                                reduction="none")  # (B, T - 1)
        real = target != IGNORE
        is_focus = real & torch.isin(target, focus)
        nll_all += float(nll[real].sum())
        n_all += int(real.sum())
        nll_focus += float(nll[is_focus].sum())
        n_focus += int(is_focus.sum())
    return {"ppl": float(np.exp(nll_all / max(n_all, 1))), "ppl_sid": float(np.exp(nll_focus / max(n_focus, 1))),
            "tokens": n_all}


class LLMRecommender(TrieRecommender):
    """An LLM after surgery (+ CPT + SFT) as a `Recommender`: the recommendation prompt of each case, decoded by
    the shared trie-constrained beam search over the items' SID-token paths.

    Cases may carry a `constraint` column (str or None): the steerability lens asks for e.g. a Horror movie.
    """

    reads_constraints = True
    progress = True

    def __init__(self, model, codec: "PromptCodec", max_history: int, decode, mixed_precision: str = "no") -> None:
        self.model = model.eval()
        self.codec = codec
        self.max_history = max_history
        self.decode = decode
        self.mixed_precision = mixed_precision
        self.trie = ItemTrie(codec.item_tokens)
        self.pad_id = codec.tok.pad_token_id if codec.tok.pad_token_id is not None else codec.tok.eos_token_id

    def _prompts(self, cases) -> list[list[int]]:
        constraints = cases["constraint"] if "constraint" in cases else [None] * len(cases)
        return [self.codec.prompt(list(h)[-self.max_history:], c) for h, c in zip(cases["history"], constraints)]

    def _decoding(self):
        device = next(self.model.parameters()).device.type
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.mixed_precision == "bf16")

    @classmethod
    def load(cls, path: str | Path, sids: SidTable, decode) -> "LLMRecommender":
        from sidrec.corpus.prompts import PromptCodec

        model, tok, meta = load_llm(path)
        if list(meta.get("vocab_sizes", [])) != list(sids.vocab_sizes):
            raise ValueError(f"{path}: trained on SID vocab sizes {meta.get('vocab_sizes')}, the sids have "
                             f"{sids.vocab_sizes}; pass the SID table the LLM was trained with")
        codec = PromptCodec(tok, np.asarray(meta["sid_token_ids"]), sids, [""] * sids.num_items, meta["noun"],
                            meta.get("objective", "last"))
        if decode.llm_dtype == "bfloat16":  # one cast at load; autocast then has nothing left to cast per op
            model.to(torch.bfloat16)
        elif decode.llm_dtype != "float32":
            raise ValueError(f"eval.llm_dtype: unknown {decode.llm_dtype!r}; use bfloat16 or float32")
        return cls(model, codec, meta["max_history"], decode, meta.get("mixed_precision", "no"))
