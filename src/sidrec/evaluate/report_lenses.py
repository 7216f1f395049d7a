"""Report sections for the lenses beyond accuracy: cold start (TIGER's fill and its cost), steerability with
qualitative examples, and the LLM path (continued pre-training perplexity, instruction-tuning validation score).

Steerability reads what the steer stage wrote per system (`metrics/steer_<system>.json` and the per-case
`data/steer/<system>.parquet`, the same counterfactual cases in the same order for every system). Systems that read
text are compared with the best constraint-blind system on the same cases by the paired bootstrap of the per-case
share of the top-k in the requested genre (`sidrec.evaluate.metrics.paired_bootstrap`), resampling users (`user_id`;
one user can be a case of several pairs) with all of their cases; the satisfied@k intervals resample users too.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from sidrec.evaluate.metrics import bootstrap_ci, count_users, ndcg_at_k, paired_bootstrap
from sidrec.evaluate.report_data import SystemResult
from sidrec.evaluate.report_render import MISSING, NOT_RUN, cases_from_users, fmt_ci, fmt_fixed, md_table
from sidrec.io import read_json

log = logging.getLogger(__name__)

STEER_COLUMNS = ("case_id", "user_id", "source", "constraint", "history", "topk", "satisfied", "closeness")


def load_steer(metrics_dir: str | Path, steer_dir: str | Path,
               systems: list[str]) -> dict[str, tuple[dict, pd.DataFrame]]:
    """system -> (steer metrics, per-case frame) for every listed system that has both files, in listed order."""
    out = {}
    for s in systems:
        m, c = Path(metrics_dir) / f"steer_{s}.json", Path(steer_dir) / f"{s}.parquet"
        if m.exists() and c.exists():
            cases = pd.read_parquet(c)
            absent = [col for col in STEER_COLUMNS if col not in cases.columns]
            if absent:
                raise ValueError(f"report: {c} lacks column(s) {absent}; rerun the steer stage")
            out[s] = (read_json(m), cases)
    return out


def _aligned(steer: dict) -> bool:
    ids = [tuple(c["case_id"]) + tuple(c["user_id"]) + tuple(c["constraint"]) for _, c in steer.values()]
    return all(i == ids[0] for i in ids)


def steer_section(steer: dict[str, tuple[dict, pd.DataFrame]], titles: list[str], genres: list, k: int,
                  n_boot: int, seed: int, examples: int = 2, shown: int = 5, not_run: list[str] = ()) -> str:
    """Steerability: the summary table, per-pair shares, paired tests against the best constraint-blind system,
    and qualitative examples (history, then each system's top items with the requested genre marked).

    Args:
        steer: from `load_steer`.
        titles, genres: per item (for the examples).
        k: cut-off the steer stage used.
        examples: cases shown for the first pair; shown: top items listed per system.
        not_run: listed systems without steer files (a "not run" row each).
    """
    if not steer:
        return ""
    first = next(iter(steer.values()))[1]
    text = (f"## Steerability\n\nCounterfactual cases: users whose train history leans on one genre are asked for "
            f"another (\"Constraint: Suggest a {{genre}} movie.\"), {len(first)} cases from "
            f"{count_users(first['user_id'])} users over "
            f"{first.groupby(['source', 'constraint']).ngroups} (history genre -> requested genre) pairs, the same "
            f"cases for every system. satisfied@{k} = share of the top-{k} carrying the requested genre; base rate = "
            f"that share among the user's unseen items (a constraint-blind random pick); closeness@{k} = mean cosine "
            f"of the recommended items' content embeddings to the history's mean (does the system stay personal?); "
            f"reference = the {k} most popular unseen items of the requested genre (obeys, ignores the user). "
            f"Systems that cannot read text answer the same cases with the constraint ignored. satisfied@{k} "
            f"intervals are 95% per-user bootstraps ({n_boot} resamples of users, each with all of its cases).\n\n")
    rows = []
    for s, (m, c) in steer.items():
        sat = c["satisfied"].to_numpy(float)
        low, high = bootstrap_ci(sat, c["user_id"].to_numpy(), n_boot=n_boot, seed=seed)
        ci = f" [{low:.3f}, {high:.3f}]" if sat.size else ""
        rows.append([s, "yes" if m.get("reads_constraints") else "no",
                     fmt_fixed(float(sat.mean()) if sat.size else None) + ci, fmt_fixed(m.get("base_rate")),
                     fmt_fixed(m.get(f"closeness@{k}")), fmt_fixed(m.get(f"reference_closeness@{k}"))])
    rows += [[s, NOT_RUN, *[MISSING] * 4] for s in not_run]
    text += md_table(["system", "reads text", f"satisfied@{k}", "base rate", f"closeness@{k}",
                      f"reference closeness@{k}"], rows)
    pairs = list(dict.fromkeys(p for m, _ in steer.values() for p in m.get("pairs", {})))
    if pairs:
        groups = {f"{a}->{b}": g for (a, b), g in first.groupby(["source", "constraint"], sort=False)}
        text += f"\n\nsatisfied@{k} per pair:\n\n" + md_table(
            ["pair", "cases", "users", *steer],
            [[p, str(len(groups.get(p, ()))), str(count_users(groups[p]["user_id"]) if p in groups else 0),
              *[fmt_fixed(m.get("pairs", {}).get(p, {}).get(f"satisfied@{k}")) for m, _ in steer.values()]]
             for p in pairs])
    text += _paired_steer(steer, k, n_boot, seed)
    return text + _examples(steer, titles, genres, examples, shown)


def _paired_steer(steer: dict, k: int, n_boot: int, seed: int) -> str:
    readers = [s for s, (m, _) in steer.items() if m.get("reads_constraints")]
    blind = [s for s, (m, _) in steer.items() if not m.get("reads_constraints")]
    if not readers or not blind:
        return ""
    if not _aligned(steer):
        log.warning("report: steer cases differ between systems; no paired steerability test")
        return "\n\nThe systems' steer cases differ, so no paired test is reported."
    ref = max(blind, key=lambda s: steer[s][1]["satisfied"].mean())
    users = steer[ref][1]["user_id"].to_numpy()
    rows = []
    for s in readers:
        res = paired_bootstrap(steer[s][1]["satisfied"].to_numpy(float), steer[ref][1]["satisfied"].to_numpy(float),
                               users, n_boot=n_boot, seed=seed)
        rows.append([s, f"{res['diff']:+.3f}", f"[{res['ci_low']:+.3f}, {res['ci_high']:+.3f}]",
                     f"{res['p_value']:.4f}"])
    return (f"\n\nPaired bootstrap over the same {len(users)} cases from {count_users(users)} users against `{ref}`, "
            f"the constraint-blind system that happens to meet the requested genre most often (users resampled "
            f"jointly for both systems, each with all of its cases):\n\n"
            + md_table(["system", f"Δ satisfied@{k}", "95% CI (per user)", "p-value"], rows))


def _examples(steer: dict, titles: list[str], genres: list, n: int, shown: int) -> str:
    _, cases = next(iter(steer.values()))
    if not len(cases) or not _aligned(steer):
        return ""
    src, dst = cases.iloc[0][["source", "constraint"]]
    picked = cases.index[(cases["source"] == src) & (cases["constraint"] == dst)][:n]
    out = [f"\n\n### Examples: a {src} history asked for {dst}\n\n(✓ = the item carries {dst})"]
    for i in picked:
        hist = [titles[j] for j in list(cases.loc[i, "history"])[-shown:]]
        out.append(f"\n**Case {int(cases.loc[i, 'case_id'])}** — last {len(hist)} of the history: " + "; ".join(hist))
        for s, (_, c) in steer.items():
            top = [int(j) for j in list(c.loc[i, "topk"])[:shown] if int(j) >= 0]
            marks = [f"{titles[j]}{' ✓' if dst in set(genres[j]) else ''}" for j in top]
            out.append(f"- `{s}`: " + "; ".join(marks))
    return "\n".join(out)


def llm_section(metrics_dir: str | Path, tokenizers: list[str]) -> str:
    """The LLM path per tokenizer: held-out perplexity before/after continued pre-training (all tokens and SID
    tokens only), then the instruction-tuned model's validation NDCG@10."""
    rows = []
    for t in tokenizers:
        cpt_p, sft_p = Path(metrics_dir) / f"cpt_{t}.json", Path(metrics_dir) / f"sft_{t}.json"
        if not cpt_p.exists():
            continue
        c, s = read_json(cpt_p), read_json(sft_p) if sft_p.exists() else {}
        rows.append([t, f"{c['heldout_ppl_before']:.1f} -> {c['heldout_ppl_after']:.1f}",
                     f"{c['heldout_ppl_sid_before']:.1f} -> {c['heldout_ppl_sid_after']:.1f}",
                     str(c.get("new_tokens", MISSING)), fmt_fixed(s.get("valid_ndcg@10"), 4),
                     fmt_fixed(s.get("valid_recall@10"), 4),
                     f"{(c.get('runtime_s') or 0) / 60:.1f} + {(s.get('runtime_s') or 0) / 60:.1f}"])
    if not rows:
        return ""
    return ("## LLM path\n\nContinued pre-training on the bilingual corpus (identity sentences both ways + "
            "train-history sentences): perplexity on held-out history sentences before -> after, over all tokens "
            "and over the SID tokens only; then the instruction-tuned model's NDCG@10 / Recall@10 on a seeded "
            "sample of validation cases.\n\n"
            + md_table(["tokenizer", "held-out ppl", "held-out SID-token ppl", "new tokens", "sft valid ndcg@10",
                        "sft valid recall@10", "minutes (cpt + sft)"], rows))


def cold_start_section(results: list[SystemResult], k: int, not_run: list[str] = (), n_boot: int = 1000,
                       seed: int = 0) -> str:
    """Cold-start table (targets with zero train events, per-user intervals) with each semantic-ID system's
    validation-chosen epsilon, its cold-start recall without the fill, the share of cold items in its top-k lists,
    the cost of the fill in overall NDCG@k (paired per user, filled vs. plain lists on the same cases), and what the
    model reaches by itself without trie or fill; zeros are shown and explained, never hidden; "not run" rows for
    the systems in `not_run`."""
    rows, blind = [], []
    for r in sorted(results, key=lambda r: -r.metrics.get("cold_start", {}).get(f"recall@{k}", 0.0)):
        cold = r.metrics.get("cold_start", {})
        n = cold.get("cases", 0)
        eps = r.metrics.get("cold_epsilon", {})
        applies = eps.get("applies", False)
        base = r.metrics.get("eps0", {}).get("cold_start", {})
        cost = MISSING
        if applies and eps.get("chosen", 0.0) > 0 and "rank_eps0" in r.cases:
            users = r.cases["user_id"].to_numpy()
            d = paired_bootstrap(ndcg_at_k(r.cases["rank"].to_numpy(), k),
                                 ndcg_at_k(r.cases["rank_eps0"].to_numpy(), k), users, n_boot=n_boot, seed=seed)
            cost = f"{d['diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
        elif applies:
            cost = "0 (epsilon 0)"
        free = r.metrics.get("cold_start_unconstrained", {})
        share = r.metrics.get(f"cold_share@{k}")
        rows.append([r.name, str(n), str(r.metrics.get("cold_start_users", MISSING)), fmt_ci(cold, f"recall@{k}"),
                     fmt_ci(cold, f"ndcg@{k}"), f"{eps.get('chosen', 0.0):.1f}" if applies else "n/a",
                     f"{base[f'recall@{k}']:.4f}" if applies and f"recall@{k}" in base else MISSING,
                     f"{share:.4f}" if isinstance(share, float) else MISSING, cost,
                     f"{free[f'recall@{k}']:.4f} ({free.get('cold_share_of_valid', 0.0):.4f})"
                     if f"recall@{k}" in free else MISSING])
        if n and cold.get(f"recall@{k}", 0.0) == 0.0:
            blind.append(f"`{r.name}`")
    rows += [[name, NOT_RUN] + [MISSING] * 8 for name in not_run]
    ref = results[0].metrics
    text = (f"## Cold start\n\nTest cases whose target had zero training events: "
            f"{cases_from_users(ref['cold_start']['cases'], ref.get('cold_start_users', 0))}; 95% intervals resample "
            f"those users. A semantic-ID system may fill up to floor(epsilon x {k}) slots of each list with cold items "
            f"whose ID starts with a prefix its beam search kept (TIGER's cold-start fill: the deepest matching prefix "
            f"first, ordered by the model's prefix score; the cold items take the last slots). Epsilon is chosen per "
            f"system on validation: the highest validation cold-start Recall@{k} whose NDCG@{k} stays within "
            f"`eval.cold_max_loss` of epsilon 0. *recall@{k} at eps 0*: the same system without the fill. "
            f"*cold share@{k}*: share of all test top-{k} slots holding a cold item. *cost in NDCG@{k}*: overall "
            f"test NDCG@{k} with the fill minus without, paired per user over every test case. *unconstrained*: "
            f"cold-start Recall@{k} of a beam search over the whole vocabulary with neither trie nor fill (in "
            f"brackets, the share of its valid outputs that are cold items): does the model produce a cold item's ID "
            f"by itself?\n\n")
    text += md_table(["system", "cold cases", "cold users", f"recall@{k}", f"ndcg@{k}", "epsilon",
                      f"recall@{k} at eps 0",
                      f"cold share@{k}", f"cost in NDCG@{k}", "unconstrained"], rows)
    if blind:
        text += (f"\n\n{', '.join(blind)} never placed a cold-start target in the top {k}: a recall of 0 here means "
                 "the system cannot recommend items it never saw in training.")
    knn = next((r for r in results if r.name == "content-knn"), None)
    if knn is not None:
        yard = knn.metrics.get("cold_start", {}).get(f"recall@{k}", 0.0)
        better = [f"`{r.name}`" for r in results if r.metrics.get("cold_epsilon", {}).get("applies")
                  and r.metrics.get("cold_start", {}).get(f"recall@{k}_ci_low", 0.0) > yard]
        text += (f"\n\nThe yardstick is `content-knn` (cosine to the history's mean content embedding, no "
                 f"interactions): cold-start Recall@{k} {yard:.4f}. "
                 + (f"Above it with the lower end of their interval: {', '.join(better)}." if better else
                    "No semantic-ID system's interval lies above it."))
    if all(r.metrics.get("cold_start", {}).get("cases", 0) == 0 for r in results):
        text += "\n\nThe test split has no cold-start cases, so this table carries no information."
    return text
