"""Training the LLM stages (docs/systems.md, PLUM): the batch collators of continued pre-training (packed or
right-padded) and SFT (one-target left-padded, dense right-padded), the HF `Trainer` wrapper, the SFT checkpoint
callback that keeps the best validation step, and perplexity."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from sidrec.generate import left_pad

log = logging.getLogger(__name__)

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
    ids, mask, pos = left_pad(seqs, pad_id, torch.device("cpu"))
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
