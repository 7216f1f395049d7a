"""Training under `accelerate launch` with two CPU processes must match one process on the same global batch.

Two processes on a CPU: `accelerate launch --cpu --num_processes 2` alone starts ONE process (accelerate's --cpu
path spreads processes only through mpirun with --mpirun_hostfile), so the launches here use torchrun through
`--multi_gpu` with ACCELERATE_USE_CPU=true (gloo backend), and every test checks that two ranks ran.

- The LoRA step of the LLM stages (`with_lora` + `train_lm`, HF Trainer): weights and loss match (passes).
- The GPT stage (stages/train_gpt.py on the shared accelerate loop) and the CPT stage (stages/cpt.py), run unchanged
  in a tiny repo: outputs complete and loadable (rank 0 writes them), curves and weights as in one process (the LR
  scheduler steps once per optimizer step, logged losses are averaged over ranks, LoRA init is seeded).

This file is also the script the LoRA test launches (`python tests/test_accelerate_launch.py lora-step ...`).
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
LAUNCH = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1"]
VOCAB, PAD = 40, 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(env: dict) -> dict:
    return {**env, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + "\n" + res.stderr).splitlines()[-40:])
        raise AssertionError(f"`{' '.join(map(str, cmd))}` exited {res.returncode}:\n{tail}")
    return res


def accelerate(script: str, *args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """`accelerate launch` of `script` on two CPU processes."""
    return run([sys.executable, "-m", "accelerate.commands.launch", *LAUNCH, "--main_process_port", str(free_port()),
                script, *args], cwd, launch_env(env))


def single(script: str, *args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return run([sys.executable, script, *args], cwd, {**env, "OMP_NUM_THREADS": "1"})


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def tsv(path: Path) -> list[float]:
    """The value column of a dvclive TSV."""
    rows = path.read_text(encoding="utf-8").split("\n")[1:]
    return [float(r.split("\t")[-1]) for r in rows if r.strip()]


# ---- the LoRA step (library level) ---------------------------------------------------------------------------------

def lora_step(out: str, batch_size: int) -> None:
    """Worker: a tiny Llama with LoRA + trainable new-token rows, two epochs of `train_lm`; saves weights and loss."""
    import numpy as np
    import torch
    from accelerate import PartialState

    from llm_fixtures import tiny_llama
    from sidrec.models.llm import LoraSettings, TrainSettings, pad_right, train_lm, with_lora

    model = tiny_llama(VOCAB, seed=0)
    torch.manual_seed(1)  # LoRA's initialization draws from the global generator
    lm = with_lora(model, np.arange(VOCAB - 8, VOCAB), LoraSettings(rank=4, alpha=8.0, dropout=0.0))
    seqs = [[3 + (i * 7) % 29, 3 + (i * 5) % 31, VOCAB - 8 + i % 8] + [3 + i % 11] * (i % 4) for i in range(48)]
    stats = train_lm(lm, seqs, lambda b: pad_right(b, PAD),
                     TrainSettings(epochs=2, batch_size=batch_size, lr=1e-2, seed=0, logging_steps=1))
    state = PartialState()
    weights = {k: v.detach().clone() for k, v in lm.merge_and_unload().state_dict().items()}
    torch.save(weights, f"{out}.rank{state.process_index}.pt")
    Path(f"{out}.rank{state.process_index}.json").write_text(json.dumps(
        {"train_loss": stats["train_loss"], "world_size": state.num_processes}))


def test_lora_step_matches_one_process(tmp_path):
    import torch

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    accelerate(__file__, "lora-step", str(tmp_path / "multi"), "4", cwd=tmp_path, env=env)
    single(__file__, "lora-step", str(tmp_path / "single"), "8", cwd=tmp_path, env=env)
    multi = [json.loads((tmp_path / f"multi.rank{r}.json").read_text()) for r in (0, 1)]
    one = json.loads((tmp_path / "single.rank0.json").read_text())
    assert [m["world_size"] for m in multi] == [2, 2] and one["world_size"] == 1
    w0, w1, ws = (torch.load(tmp_path / name) for name in ("multi.rank0.pt", "multi.rank1.pt", "single.rank0.pt"))
    assert max_abs_diff(w0, w1) == 0.0  # DDP keeps the ranks identical
    assert max_abs_diff(w0, ws) < 1e-4
    assert multi[0]["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    assert multi[0]["train_loss"] == multi[1]["train_loss"]


# ---- the training stages, unchanged, in a tiny repo ----------------------------------------------------------------

@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A tiny repo with the atomic SIDs, the prepared data and the tiny LLM base built by `dvc repro`."""
    from conftest import create_tiny_repo

    repo = create_tiny_repo(tmp_path_factory.mktemp("accelerate") / "repo")
    repo.repro("tokenize@atomic", "llm_base")
    return repo


def write_params(repo, name: str, overrides: dict, no_search: bool = False) -> str:
    """A params file next to params.yaml with `overrides` merged in (and the GPT grid search off)."""
    import yaml

    from conftest import deep_merge

    params = deep_merge(repo.params(), overrides)
    if no_search:
        params["gpt"]["search"] = {}  # a merge cannot empty a mapping
    (repo.root / name).write_text(yaml.safe_dump(params, sort_keys=False))
    return name


def ranks_logged(res: subprocess.CompletedProcess, marker: str) -> int:
    return sum(marker in line for line in (res.stdout + res.stderr).splitlines())




def test_gpt_stage_matches_one_process(upstream, tmp_path):
    """stages/train_gpt.py, unchanged: 2 processes x batch 8 vs 1 process x batch 16, dropout off."""
    from sidrec.models.gpt import GPTRecommender
    from sidrec.tokenizers.sids import SidTable

    repo = upstream
    gpt = {"dropout": 0.0, "epochs": 2, "eval_every": 1, "patience": 0}
    runs = {}
    for name, (runner, batch) in {"multi": (accelerate, 8), "single": (single, 16)}.items():
        params = write_params(repo, f"params_gpt_{name}.yaml", {"gpt": {**gpt, "batch_size": batch}}, no_search=True)
        runs[name] = runner(
            "stages/train_gpt.py", "--params", params, "--sids", "data/sids/atomic.parquet",
            "--events", "data/prepared/events.parquet", "--split", "data/prepared/split.json",
            "--out", f"{tmp_path}/{name}/model", "--metrics", f"{tmp_path}/{name}/metrics.json",
            "--plots", f"{tmp_path}/{name}/plots", cwd=repo.root, env=repo.env)
    assert ranks_logged(runs["multi"], "training windows") == 2
    curves = {n: tmp_path / n / "plots" / "plots" / "metrics" for n in runs}
    assert tsv(curves["multi"] / "lr.tsv") == pytest.approx(tsv(curves["single"] / "lr.tsv"), rel=1e-6)
    assert tsv(curves["multi"] / "train_loss.tsv") == pytest.approx(tsv(curves["single"] / "train_loss.tsv"), abs=0.02)
    sids = SidTable.load(repo.root / "data" / "sids" / "atomic.parquet")
    rec = GPTRecommender.load(tmp_path / "multi" / "model", sids)  # a complete, loadable model directory
    assert sum(p.numel() for p in rec.model.parameters()) == json.loads(
        (tmp_path / "multi" / "metrics.json").read_text())["parameters"]




def test_cpt_stage_matches_one_process(upstream, tmp_path):
    """stages/cpt.py, unchanged: LoRA continued pre-training, 2 processes x batch 4 vs 1 process x batch 8."""
    import torch
    from safetensors.torch import load_file

    repo = upstream
    runs = {}
    for name, (runner, batch) in {"multi": (accelerate, 4), "single": (single, 8)}.items():
        params = write_params(repo, f"params_cpt_{name}.yaml",
                              {"llm": {"lora_dropout": 0.0}, "cpt": {"batch_size": batch, "max_sequences": 16}})
        runs[name] = runner(
            "stages/cpt.py", "--params", params, "--base", "models/llm_base", "--sids", "data/sids/atomic.parquet",
            "--items", "data/prepared/items.parquet", "--events", "data/prepared/events.parquet",
            "--out", f"{tmp_path}/{name}/model", "--metrics", f"{tmp_path}/{name}/metrics.json",
            "--plots", f"{tmp_path}/{name}/plots", cwd=repo.root, env=repo.env)
    assert ranks_logged(runs["multi"], "held-out perplexity before CPT") == 2
    weights = {n: load_file(tmp_path / n / "model" / "model.safetensors") for n in runs}
    assert max_abs_diff(weights["multi"], weights["single"]) < 1e-4
    metrics = {n: json.loads((tmp_path / n / "metrics.json").read_text()) for n in runs}
    assert metrics["multi"]["heldout_ppl_after"] == pytest.approx(metrics["single"]["heldout_ppl_after"], rel=1e-4)
    assert metrics["multi"]["train_loss"] == pytest.approx(metrics["single"]["train_loss"], rel=1e-3)
    assert (tmp_path / "multi" / "plots" / "metrics.json").exists()
    assert torch.isfinite(torch.tensor(metrics["multi"]["train_loss"]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["lora-step"]:
        sys.path.insert(0, str(HERE))
        lora_step(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"usage: {sys.argv[0]} lora-step OUT_PREFIX BATCH_SIZE")
