"""Inputs of the LAMIA palette network (LAMIA, Liu et al. 2024, sec. 4.2.1): per item a content block and, per generative task,
a task block `[t_i; a_i]`, tokenized once and batched for the two passes of `models/palette.py`.

Block layout of one (item, task) example, in the positions of the full sequence:

    [content (c tokens); LaP_1..L; LdP_1..L; task prompt "title:"; answer tokens]
     0 ............ c-1  c .. c+L-1  c+L .. c+2L-1  c+2L ...

Tasks are items.parquet columns (`palette.tasks`): MovieLens title / genres / year, Amazon title / genres (the
category path). A list value is joined with ", "; an empty or missing value skips that (item, task) example; a
task naming a column that items.parquet does not have is an error. Only the answer tokens carry the loss (no EOS:
the instruct LLM's end token starts at ~20 nats and would dominate L_gen without telling the palette anything).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

IGNORE = -100


def attribute_text(value) -> str:
    """An items.parquet cell as answer text ("" = missing): lists are joined with ", ", NA/None -> ""."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(str(v) for v in value if str(v).strip())
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


@dataclass
class PaletteExamples:
    """Tokenized blocks of every catalogue item (item_id order).

    content: per item, content token ids (truncated to max_content_tokens, at least one token).
    tasks: per item, list of (task index, prompt ids, answer ids); items may miss some tasks.
    """

    content: list[list[int]]
    tasks: list[list[tuple[int, list[int], list[int]]]]
    task_names: list[str]
    skipped: dict[str, int]

    @property
    def num_examples(self) -> int:
        return sum(len(t) for t in self.tasks)


def build_examples(items: pd.DataFrame, tok, task_columns: list[str], max_content_tokens: int,
                   content_column: str = "text") -> PaletteExamples:
    """Tokenize the content and task blocks of every item.

    Args:
        items: items.parquet (item_id 0..N-1 in order, `text` and the task columns).
        tok: the LLM tokenizer.
        task_columns: items.parquet columns to reconstruct / predict, one generative task each.
        max_content_tokens: content block length cap (longer texts are truncated).
    Returns:
        PaletteExamples; `skipped[task]` counts items without a value for that task.
    """
    missing = [c for c in [content_column, *task_columns] if c not in items.columns]
    if missing:
        raise ValueError(f"palette.tasks: items.parquet has no column {missing[0]!r} (columns: "
                         f"{', '.join(map(str, items.columns))}); name existing columns only")
    if not np.array_equal(items["item_id"].to_numpy(), np.arange(len(items))):
        raise ValueError("palette: items.parquet item_id must be 0..N-1 in order")
    eos = tok.eos_token_id
    prompts = [tok(f"{name}:", add_special_tokens=False).input_ids for name in task_columns]
    content, tasks, skipped = [], [], {name: 0 for name in task_columns}
    for row in items[[content_column, *task_columns]].itertuples(index=False):
        text = attribute_text(row[0])
        ids = tok(text, add_special_tokens=False).input_ids[:max_content_tokens] or [eos]
        content.append(ids)
        mine = []
        for t, name in enumerate(task_columns):
            answer = attribute_text(row[1 + t])
            if not answer:
                skipped[name] += 1
                continue
            mine.append((t, prompts[t], tok(" " + answer, add_special_tokens=False).input_ids))
        tasks.append(mine)
    return PaletteExamples(content, tasks, list(task_columns), skipped)


def pack(seqs: list[list[int]], starts: list[int], row_tokens: int, pad_id: int) -> dict:
    """Pack sequences into rows of at most `row_tokens` tokens (first fit, in order; a longer sequence gets its own
    row) with a block-diagonal causal mask, so no compute goes to padding.

    Args:
        seqs: token id lists; starts: full-sequence position id of each sequence's first token.
    Returns:
        ids, pos (R, W) int64; allowed (R, 1, W, W) bool (True = may attend; padding attends to itself only);
        row, col (len(seqs),) where each sequence starts.
    """
    rows: list[list[int]] = []
    fill: list[int] = []
    row, col = [], []
    for s in seqs:
        r = next((k for k, f in enumerate(fill) if f + len(s) <= row_tokens), None)
        if r is None:
            rows.append([])
            fill.append(0)
            r = len(rows) - 1
        row.append(r)
        col.append(fill[r])
        rows[r].append(len(row) - 1)
        fill[r] += len(s)
    width = max(fill) if fill else 1
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)
    for i, s in enumerate(seqs):
        r, c, n = row[i], col[i], len(s)
        ids[r, c:c + n] = torch.as_tensor(s)
        pos[r, c:c + n] = starts[i] + torch.arange(n)
        allowed[r, c:c + n, c:c + n] = torch.ones(n, n, dtype=torch.bool).tril()
    return {"ids": ids, "pos": pos, "allowed": allowed[:, None], "row": torch.as_tensor(row),
            "col": torch.as_tensor(col)}


class PaletteCollator:
    """Item ids -> one batch for `PaletteNet.loss`: the [content; LaP] sequence of each item (pass 1) and the
    [LdP; task prompt; answer] sequence of each drawn (item, task) example (pass 2), each packed into rows
    (`pack`) with the full sequence's position ids.

    Args:
        examples: the tokenized blocks.
        lap_ids, ldp_ids: (L,) token ids of the LaP and LdP tokens.
        pad_id: padding token id.
        tasks_per_item: tasks drawn per item per batch (seeded, without replacement); 0 = all of the item's tasks.
        seed: seed of the task draw (batches are drawn in a deterministic order, so the draw is reproducible).
        row_tokens: packing row capacity (attention cost grows with its square).
    """

    def __init__(self, examples: PaletteExamples, lap_ids, ldp_ids, pad_id: int, tasks_per_item: int = 0,
                 seed: int = 0, row_tokens: int = 256) -> None:
        self.ex = examples
        self.lap = [int(i) for i in lap_ids]
        self.ldp = [int(i) for i in ldp_ids]
        self.pad_id = pad_id
        self.tasks_per_item = tasks_per_item
        self.rng = np.random.default_rng(seed)
        self.row_tokens = row_tokens

    def content_batch(self, items: list[int]) -> dict:
        """Pass-1 inputs: packed [content; LaP] sequences, `lap_at` (B, L) (row, col) of each item's LaP tokens."""
        seqs = [self.ex.content[i] + self.lap for i in items]
        p = pack(seqs, [0] * len(seqs), self.row_tokens, self.pad_id)
        length = len(self.lap)
        lap_col = (p["col"] + torch.as_tensor([len(s) for s in seqs]) - length)[:, None] + torch.arange(length)
        return {"content_ids": p["ids"], "content_pos": p["pos"], "content_allowed": p["allowed"],
                "lap_row": p["row"][:, None].expand(-1, length), "lap_col": lap_col}

    def _draw(self, item: int) -> list:
        tasks = self.ex.tasks[item]
        if self.tasks_per_item and len(tasks) > self.tasks_per_item:
            keep = np.sort(self.rng.choice(len(tasks), self.tasks_per_item, replace=False))
            tasks = [tasks[k] for k in keep]
        return tasks

    def __call__(self, items) -> dict:
        items = [int(i) for i in items]
        batch = self.content_batch(items)
        seqs, owner, starts, task_idx, first = [], [], [], [], []
        for b, i in enumerate(items):
            for t, prompt, answer in self._draw(i):
                seqs.append(self.ldp + prompt + answer)
                owner.append(b)
                starts.append(len(self.ex.content[i]) + len(self.lap))  # full-sequence position of LdP_1
                task_idx.append(t)
                first.append(len(self.ldp) + len(prompt))  # first answer token
        p = pack(seqs, starts, self.row_tokens, self.pad_id)
        targets = torch.full(p["ids"].shape, IGNORE, dtype=torch.long)
        target_task = torch.full(p["ids"].shape, -1, dtype=torch.long)  # task index at each target position
        for k, s in enumerate(seqs):  # position t predicts token t + 1: the answer tokens
            r, c = int(p["row"][k]), int(p["col"][k])
            targets[r, c + first[k] - 1:c + len(s) - 1] = torch.as_tensor(s[first[k]:])
            target_task[r, c + first[k] - 1:c + len(s) - 1] = task_idx[k]
        length = len(self.ldp)
        batch.update({"task_ids": p["ids"], "task_pos": p["pos"], "task_allowed": p["allowed"],
                      "task_targets": targets, "target_task": target_task, "ldp_row": p["row"][:, None].expand(-1, length),
                      "ldp_col": p["col"][:, None] + torch.arange(length),
                      "task_owner": torch.as_tensor(owner, dtype=torch.long),
                      "task_index": torch.as_tensor(task_idx, dtype=torch.long),
                      "item_ids": torch.as_tensor(items, dtype=torch.long)})
        return batch
