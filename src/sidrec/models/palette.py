"""The LAMIA item palette network (Learning Multi-Aspect Item Palette, Liu et al. 2024, sec. 4.2.1-4.2.2).

A decoder-only LLM reads, per item, the blocks [content; LaP_1..L; LdP_1..L; task] (models/palette_data.py) under a
hierarchical attention mask: causal inside every block, the LaP block also sees the content block, the task block
also sees the LdP block, every other cross-block path is blocked. Dual forward pass: pass 1 yields the final hidden
states (after the final norm) at the LaP positions, the item palette B (B, L, D); pass 2 replaces the LdP input
embeddings with B, so the task answer is generated from the palette alone. Objective (eq. L_LAMIA):

    L = L_gen + gamma (L_intra + L_inter)
    L_gen   = -log P(a_{i,j+1} | palette, t_i, a_{i,1..j})          cross-entropy on the answer tokens only
    L_intra = mean_{i, j != k} max(0, cos(B_ij, B_ik) - alpha_intra)^2   positions of the same item
    L_inter = mean_{i != k, j} max(0, cos(B_ij, B_kj) - alpha_inter)^2   same position, different items

The paper sums the hinge terms; here they are averaged over their B L (L-1) and L B (B-1) terms, so gamma does
not change meaning with the batch size.

Cheaper exact computation (what `PaletteNet` trains with): under that mask the LaP outputs depend only on
[content; LaP], which is plain causal attention; and the task logits depend only on [LdP; task], again plain causal.
So pass 1 runs [content; LaP] and pass 2 runs [LdP(palette); task] with the full sequence's position ids, which
equals the masked full-sequence dual pass (the reference `dual_forward_masked` in tests/test_palette.py) at a
fraction of the tokens, and one pass 1 serves all of an item's tasks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sidrec.generate import additive_mask
from sidrec.models.llm.surgery import LoraSettings, grow_vocabulary, with_lora
from sidrec.models.palette_data import IGNORE, PaletteCollator, build_examples

log = logging.getLogger(__name__)


def lap_token_names(length: int) -> list[str]:
    return [f"<LaP_{i + 1}>" for i in range(length)]


def ldp_token_names(length: int) -> list[str]:
    return [f"<LdP_{i + 1}>" for i in range(length)]


def add_palette_tokens(model, tok, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Add <LaP_i> and <LdP_i> (i = 1..L) to the tokenizer and the embedding matrix, in place.

    LaP rows start random (Gaussian with the embedding matrix's std, seeded; paper: "randomly initialized"); LdP rows
    are placeholders that pass 2 overwrites, set to the mean embedding.
    Returns:
        (L,) LaP token ids, (L,) LdP token ids.
    """
    ids, old = grow_vocabulary(model, tok, lap_token_names(length) + ldp_token_names(length), "palette tokens",
                               special=True)
    weight = model.get_input_embeddings().weight
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        std, mean = float(weight[:old].std()), weight[:old].mean(0)
        weight[ids[:length]] = (std * torch.randn(length, weight.shape[1], generator=gen)).to(weight.dtype)
        weight[ids[length:]] = mean.to(weight.dtype)
    return ids[:length], ids[length:]


def hierarchical_mask(n_content: int, length: int, n_task: int) -> torch.Tensor:
    """(T, T) bool, True = query row may attend to key column, for [content; LaP; LdP; task], T = c + 2L + t.

    Causal inside each block; LaP rows also see every content column; task rows also see every LdP column.
    """
    sizes = [n_content, length, length, n_task]
    starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    allowed = torch.zeros(starts[-1], starts[-1], dtype=torch.bool)
    for b in range(4):  # inner-block causal attention
        s, e = starts[b], starts[b + 1]
        allowed[s:e, s:e] = torch.ones(e - s, e - s, dtype=torch.bool).tril()
    allowed[starts[1]:starts[2], starts[0]:starts[1]] = True  # LaP <- content
    allowed[starts[3]:starts[4], starts[2]:starts[3]] = True  # task <- LdP
    return allowed


def model_mask(allowed: torch.Tensor, lm) -> torch.Tensor:
    """A (B, 1, Q, K) bool "may attend" mask in the form the model's attention takes as-is (transformers 5.x
    passes 4-D masks through): bool for sdpa / flex attention, additive float (0 or dtype min) for eager."""
    if lm.config._attn_implementation == "eager":
        return additive_mask(allowed, torch.float32)
    return allowed


def hinge_losses(palette: torch.Tensor, alpha_intra: float, alpha_inter: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Intra- and inter-palette hinge losses on the L2-normalized palette.

    Args:
        palette: (B, L, D) palette embeddings of B distinct items.
    Returns:
        (L_intra, L_inter), each the mean over its terms (0 when there is no pair).
    """
    z = F.normalize(palette.float(), dim=-1)  # (B, L, D)
    n, length, _ = z.shape
    intra_cos = z @ z.transpose(1, 2)  # (B, L, L)
    off_l = ~torch.eye(length, dtype=torch.bool, device=z.device)
    intra = F.relu(intra_cos[:, off_l] - alpha_intra).pow(2).mean() if length > 1 else z.new_zeros(())
    zt = z.transpose(0, 1)  # (L, B, D)
    inter_cos = zt @ zt.transpose(1, 2)  # (L, B, B)
    off_b = ~torch.eye(n, dtype=torch.bool, device=z.device)
    inter = F.relu(inter_cos[:, off_b] - alpha_inter).pow(2).mean() if n > 1 else z.new_zeros(())
    return intra, inter


@dataclass(frozen=True)
class PaletteObjective:
    gamma: float = 0.1
    alpha_intra: float = 0.1
    alpha_inter: float = 0.25


class PaletteNet(nn.Module):
    """The LLM (plain or peft-wrapped) + the palette tokens, with `loss(batch) -> dict` for `sidrec.train.fit`.

    Args:
        lm: causal LM whose input embeddings contain the LaP/LdP rows.
        lap_ids, ldp_ids: (L,) token ids.
        objective: gamma and the hinge margins.
    """

    def __init__(self, lm, lap_ids, ldp_ids, objective: PaletteObjective = PaletteObjective()) -> None:
        super().__init__()
        self.lm = lm
        self.register_buffer("lap_ids", torch.as_tensor(np.asarray(lap_ids), dtype=torch.long), persistent=False)
        self.register_buffer("ldp_ids", torch.as_tensor(np.asarray(ldp_ids), dtype=torch.long), persistent=False)
        self.objective = objective
        self.step_hook = None  # optional callable(dict of floats), called after every training loss (curves)

    @property
    def length(self) -> int:
        return len(self.lap_ids)

    def _decode(self, allowed: torch.Tensor, pos: torch.Tensor, **inputs) -> torch.Tensor:
        return self.lm.get_decoder()(attention_mask=model_mask(allowed, self.lm), position_ids=pos, use_cache=False,
                                     **inputs).last_hidden_state

    def palette(self, batch: dict) -> torch.Tensor:
        """Pass 1 over the packed [content; LaP] sequences -> (B, L, D) final-norm hidden states at LaP."""
        hidden = self._decode(batch["content_allowed"], batch["content_pos"], input_ids=batch["content_ids"])
        return hidden[batch["lap_row"], batch["lap_col"]]  # (B, L, D)

    def task_hidden(self, palette: torch.Tensor, batch: dict) -> torch.Tensor:
        """Pass 2 over the packed [LdP; task] sequences with each LdP input embedding replaced by the owner item's
        palette -> (R, W, D) final hidden states."""
        emb = self.lm.get_input_embeddings()(batch["task_ids"])  # (R, W, D)
        own = palette[batch["task_owner"]].to(emb.dtype)  # (E, L, D), E = task examples
        at = (batch["ldp_row"].reshape(-1), batch["ldp_col"].reshape(-1))
        emb = emb.index_put(at, own.reshape(-1, own.shape[-1]))
        return self._decode(batch["task_allowed"], batch["task_pos"], inputs_embeds=emb)

    def answer_logits(self, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output layer on the answer-predicting positions only -> (M, V) float logits, (M,) targets."""
        keep = targets != IGNORE
        return self.lm.get_output_embeddings()(hidden[keep]).float(), targets[keep]

    def loss(self, batch: dict) -> dict:
        """L_gen + gamma (L_intra + L_inter); also logs the answer-token accuracy."""
        pal = self.palette(batch)
        intra, inter = hinge_losses(pal, self.objective.alpha_intra, self.objective.alpha_inter)
        if len(batch["task_owner"]):
            logits, target = self.answer_logits(self.task_hidden(pal, batch), batch["task_targets"])
            gen = F.cross_entropy(logits, target)
            acc = (logits.argmax(-1) == target).float().mean()
        else:  # no item of the batch has a task value: contrastive terms only
            gen, acc = pal.new_zeros(()), pal.new_zeros(())
        total = gen + self.objective.gamma * (intra + inter)
        out = {"loss": total, "gen": gen.detach(), "intra": intra.detach(), "inter": inter.detach(),
               "acc": acc.detach()}
        if self.training and self.step_hook is not None:
            self.step_hook({k: float(v) for k, v in out.items()})
        return out

    @torch.no_grad()
    def evaluate(self, collate: PaletteCollator, items: list[int], batch_size: int = 32) -> dict:
        """Gen loss and answer-token accuracy (token-weighted; overall and per task) and the hinge losses over
        `items`, in eval mode."""
        self.eval()
        names = collate.ex.task_names
        nll, hits, count = np.zeros(len(names)), np.zeros(len(names)), np.zeros(len(names))
        pals = []
        for s in range(0, len(items), batch_size):
            batch = collate(items[s:s + batch_size])
            pal = self.palette(batch)
            pals.append(pal.float())
            if len(batch["task_owner"]):
                logits, target = self.answer_logits(self.task_hidden(pal, batch), batch["task_targets"])
                task = batch["target_task"][batch["task_targets"] != IGNORE].numpy()
                tok_nll = F.cross_entropy(logits, target, reduction="none").numpy()
                tok_hit = (logits.argmax(-1) == target).numpy()
                for arr, val in ((nll, tok_nll), (hits, tok_hit), (count, np.ones_like(tok_nll))):
                    np.add.at(arr, task, val)
        intra, inter = hinge_losses(torch.cat(pals), self.objective.alpha_intra, self.objective.alpha_inter)
        out = {"gen": nll.sum() / max(count.sum(), 1), "acc": hits.sum() / max(count.sum(), 1),
               "intra": float(intra), "inter": float(inter), "answer_tokens": int(count.sum())}
        for t, name in enumerate(names):
            out[f"acc_{name}"] = hits[t] / max(count[t], 1)
        return {k: float(v) if isinstance(v, np.floating) else v for k, v in out.items()}


@torch.no_grad()
def encode_palette(net: PaletteNet, collate: PaletteCollator, num_items: int, batch_size: int = 64) -> np.ndarray:
    """Pass 1 for every catalogue item -> (N, L, D) float32 palette, item_id order.

    Items are processed in content-length order (less padding), then put back in item_id order.
    """
    net.eval()
    order = np.argsort([len(c) for c in collate.ex.content], kind="stable")
    out = None
    for s in tqdm(range(0, num_items, batch_size), desc="palette: encode", unit="batch", mininterval=2.0):
        idx = order[s:s + batch_size]
        pal = net.palette(collate.content_batch(idx.tolist())).float().cpu().numpy()
        if out is None:
            out = np.zeros((num_items, *pal.shape[1:]), dtype=np.float32)
        out[idx] = pal
    return out


@dataclass
class PaletteResult:
    model: object
    """the LLM with the LoRA adapters merged (plain `save_pretrained`-able causal LM)"""
    vectors: np.ndarray
    """(N, L, D) float32 palettes, item_id order"""
    lap_ids: np.ndarray
    ldp_ids: np.ndarray
    metrics: dict


def learn_palette(model, tok, items, cfg, length: int, lora_rank: int, seed: int, live=None) -> PaletteResult:
    """Add the palette tokens, train LoRA + LaP rows on L_LAMIA with the shared loop, merge, encode every item.

    Args:
        model, tok: the base LLM (float32) and its tokenizer; both are modified (new tokens).
        items: items.parquet frame (item_id order).
        cfg: `PaletteConfig` (params.yaml `palette`).
        length: palette length L (top-level `palette_length`); lora_rank: top-level `lora_rank`.
        seed: global seed (LaP init, task draws, batch order, LoRA init, eval sample).
        live: optional dvclive.Live for per-step curves (train/loss, gen, intra, inter, acc).
    Returns:
        PaletteResult; metrics hold the last epoch's train losses, before/after scores on `cfg.eval_items` items
        (every task) and the final hinge losses over the catalogue (a seeded sample of 2048 items when larger).
    """
    from sidrec.train import LoopConfig, fit

    torch.manual_seed(seed)
    lap, ldp = add_palette_tokens(model, tok, length, seed)
    ex = build_examples(items, tok, list(cfg.tasks), cfg.max_content_tokens)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    collate = PaletteCollator(ex, lap, ldp, pad, cfg.tasks_per_item, seed, cfg.row_tokens)
    every_task = PaletteCollator(ex, lap, ldp, pad, 0, seed, cfg.row_tokens)
    n = len(items)
    probe = np.sort(np.random.default_rng(seed).permutation(n)[:cfg.eval_items]).tolist()
    objective = PaletteObjective(cfg.gamma, cfg.alpha_intra, cfg.alpha_inter)
    lm = with_lora(model, lap, LoraSettings(lora_rank, cfg.lora_alpha, cfg.lora_dropout))
    net = PaletteNet(lm, lap, ldp, objective)
    trainable = sum(t.numel() for t in lm.parameters() if t.requires_grad)
    before = net.evaluate(every_task, probe) if probe else {}
    log.info("palette: %d items, %d (item, task) examples, %d trainable parameters; before: %s", n,
             ex.num_examples, trainable, before)
    loop = LoopConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, warmup_ratio=cfg.warmup_ratio,
                      seed=seed, mixed_precision=cfg.mixed_precision)
    if live is not None:  # per-step curves (the shared loop logs per epoch, and one epoch is the default)
        def log_step(values: dict) -> None:
            for k, v in values.items():
                live.log_metric(f"train/{k}", v)
            live.next_step()

        net.step_hook = log_step
    res = fit(net, list(range(n)), loop, collate_fn=collate)
    net = PaletteNet(lm.merge_and_unload(), lap, ldp, objective)
    after = net.evaluate(every_task, probe) if probe else {}
    log.info("palette: after training: %s", after)
    vectors = encode_palette(net, every_task, n, cfg.encode_batch_size)
    sample = np.sort(np.random.default_rng(seed).permutation(n)[:2048])  # L_inter is O(N^2): cap the catalogue
    intra, inter = hinge_losses(torch.from_numpy(vectors[sample]), cfg.alpha_intra, cfg.alpha_inter)
    last = res.history[-1]
    metrics = {"items": n, "examples": ex.num_examples, "tasks": len(ex.task_names),
               **{f"skipped_{k}": v for k, v in ex.skipped.items()}, "trainable_parameters": trainable,
               "steps": res.steps, **{k: v for k, v in last.items() if k.startswith("train_")},
               **{f"before_{k}": v for k, v in before.items()}, **{f"after_{k}": v for k, v in after.items()},
               "catalogue_intra": float(intra), "catalogue_inter": float(inter)}
    return PaletteResult(net.lm, vectors, lap, ldp, metrics)
