"""One training loop for every torch module in sidrec (RQ-VAE, GPT recommender, ...), built on `accelerate`.

Contract (RecBole-style, kept small): the module implements `loss(batch) -> dict` whose "loss" entry is the
scalar to minimize; other entries are logged. Optimizer: AdamW; schedule: linear warmup then cosine decay
(transformers' `get_cosine_schedule_with_warmup`). Optional `evaluate() -> dict` with a "score" to maximize
drives early stopping; the best weights are restored at the end. Curves go to a `dvclive.Live` logger.
Runs unchanged under `accelerate launch` (multi-process / multi-GPU).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    grad_clip: float = 1.0
    eval_every: int = 1
    """Epochs between evaluations (early stopping checks)."""
    patience: int = 0
    """Evaluations without improvement before stopping; 0 disables early stopping."""
    seed: int = 0
    mixed_precision: str = "no"
    """`no` or `bf16` (autocast; helps on recent CPUs and GPUs)."""
    eval_at: tuple[int, ...] = ()
    """Extra optimizer steps at which `evaluate` runs for the learning curve only (no early-stopping effect)."""


class _LossForward(torch.nn.Module):
    """Routes `forward(batch)` to `module.loss(batch)`, so DDP's forward hooks see every step."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch) -> dict:
        return self.module.loss(batch)


@dataclass
class FitResult:
    best_score: float | None
    best_epoch: int
    epochs_run: int
    steps: int
    history: list[dict]
    curve: list[dict] = dataclasses.field(default_factory=list)
    """Every evaluation with its optimizer step: the `eval_at` steps and the epoch checks, in step order."""


def fit(model: torch.nn.Module, dataset, cfg: LoopConfig, collate_fn=None,
        evaluate: Callable[[torch.nn.Module], dict] | None = None,
        on_epoch_end: Callable[[torch.nn.Module, int], dict | None] | None = None,
        live=None, accelerator: Accelerator | None = None) -> FitResult:
    """Train `model` on `dataset` with AdamW + warmup/cosine; early stop on `evaluate()['score']`.

    Args:
        model: module with `loss(batch) -> dict` ("loss" required).
        dataset: a torch Dataset (or list) of samples; `collate_fn` batches them.
        cfg: loop settings.
        evaluate: called every `cfg.eval_every` epochs on the unwrapped model; returns a dict with "score".
        on_epoch_end: hook after each epoch (e.g. RQ-VAE dead-code reset); may return extra values to log.
        live: a dvclive.Live or None.
    Returns:
        FitResult; `model` holds the best weights when `evaluate` is given, else the last ones.
    """
    set_seed(cfg.seed)
    acc = accelerator or Accelerator(mixed_precision=cfg.mixed_precision)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate_fn, generator=gen)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = math.ceil(len(loader) / acc.num_processes)
    total = max(1, steps_per_epoch * cfg.epochs)
    sched = get_cosine_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    wrapped, opt, loader = acc.prepare(_LossForward(model), opt, loader)  # sched: once per optimizer step

    best, best_epoch, best_state, bad, step, history, curve = None, -1, None, 0, 0, [], []
    eval_at = set(cfg.eval_at) if evaluate is not None else set()
    bar = tqdm(total=total, desc="train", unit="step", disable=not acc.is_local_main_process, mininterval=2.0)
    for epoch in range(cfg.epochs):
        wrapped.train()
        sums: dict[str, float] = {}
        n = 0
        for batch in loader:
            with acc.autocast():
                out = wrapped(batch)
            acc.backward(out["loss"])
            if cfg.grad_clip:
                acc.clip_grad_norm_(wrapped.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            n += 1
            if step in eval_at:
                model.eval()
                curve.append({"step": step, **evaluate(model)})
                wrapped.train()
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{sums['loss'] / n:.4f}", refresh=False)
        means = acc.reduce(torch.tensor([v / max(n, 1) for v in sums.values()], dtype=torch.float64,
                                        device=acc.device), "mean")  # every rank's share of the epoch
        row = {"epoch": epoch + 1, **{f"train_{k}": float(v) for k, v in zip(sums, means)},
               "lr": sched.get_last_lr()[0]}
        if on_epoch_end is not None:
            row.update(on_epoch_end(model, epoch) or {})
        stop = False
        if evaluate is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            model.eval()
            res = evaluate(model)
            curve.append({"step": step, "epoch": epoch + 1, **res})
            row.update({f"valid_{k}": v for k, v in res.items()})
            if best is None or res["score"] > best:
                best, best_epoch, bad = res["score"], epoch + 1, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
                stop = cfg.patience > 0 and bad >= cfg.patience
        history.append(row)
        if live is not None:
            for k, v in row.items():
                if k != "epoch":
                    live.log_metric(k, v)
            live.next_step()
        (log.info if evaluate is not None else log.debug)("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        if stop:
            bar.close()
            log.info("early stop at epoch %d (best %.4f at epoch %d)", epoch + 1, best, best_epoch)
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best, best_epoch, len(history), step, history, curve)
