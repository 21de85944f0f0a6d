"""The embedded default runs: ``uv run xgenmm-train`` (SFT) and ``uv run xgenmm-train dpo``.

SFT: generate the synthetic dataset into ``<run_dir>/data`` (once), train the tiny model from
``configs/default-sft.yaml`` through the real pipeline, then greedy-generate answers for the held-out split
and print ``held-out accuracy <type>: NN.N% (chance NN%)`` per question type.

DPO: start from the default SFT run's final weights (running the SFT default first if there are none), train
with ``configs/default-dpo.yaml`` and print the reward accuracy on held-out preference pairs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import torch

from .config import Config, load_config

SFT_CONFIG = "default-sft.yaml"
DPO_CONFIG = "default-dpo.yaml"


def configs_dir() -> Path:
    """Shipped YAMLs: ``packages/xgenmm-train/configs`` in the workspace, ``xgenmm_train/configs`` in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"shipped configs not found next to {here}")


def versioned_data(data_dir: Path, version: str, make, files: dict) -> dict:
    """``make(data_dir)`` → its paths, unless ``data_dir`` holds a complete set (its ``VERSION`` file says
    ``version`` and every one of ``files`` exists), whose ``files`` are returned instead."""
    stamp = data_dir / "VERSION"
    if all(p.exists() for p in files.values()) and stamp.is_file() and stamp.read_text().strip() == version:
        return files
    if data_dir.exists():
        shutil.rmtree(data_dir)
    paths = make(data_dir)
    stamp.write_text(version + "\n")
    return paths


def ensure_dataset(data_dir: Path) -> dict:
    """Generate the synthetic dataset into ``data_dir`` unless a complete one of the current version is there."""
    from .synthetic import VERSION, make_dataset

    names = ("train", "heldout", "heldout_llava", "mixture", "dpo_train", "dpo_heldout")
    files = {k: data_dir / f"{k}.{'yaml' if k == 'mixture' else 'json'}" for k in names}
    return versioned_data(data_dir, VERSION, make_dataset, files)


def _fresh_start(config: Config) -> None:
    """The default run always trains from scratch: drop an earlier default run's checkpoints and tiny init
    (which would otherwise be resumed from / reused with possibly different settings)."""
    if config.checkpoint.resume:
        return
    run_dir = Path(config.run_dir)
    for name in ("checkpoints", "init", "final-model", "reference_logps"):
        if (run_dir / name).exists():
            shutil.rmtree(run_dir / name)


def _cpu_threads() -> None:
    """One intra-op thread unless OMP_NUM_THREADS says otherwise: the tiny model's ops are far too small to
    split, and on a busy machine spinning OpenMP threads made a step 10-20x slower (measured 3.5 s vs 0.3 s)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------------
# held-out evaluation


def evaluate_heldout(model, tokenizer, heldout: Path, batch_size: int = 64, max_new_tokens: int = 6) -> dict:
    """Greedy answers for the held-out items → {type: (accuracy, chance, n)}."""
    from PIL import Image

    from xgenmm_data.metrics import exact_match
    from xgenmm_data.templates import build_prompt
    from xgenmm_lm.inference import generate_texts

    from .synthetic import SYSTEM

    items = json.loads(heldout.read_text())
    root = heldout.parent
    prompts = [
        build_prompt("".join("<image>\n" for _ in it["images"]) + it["question"], system=SYSTEM)
        for it in items
    ]
    images = [[Image.open(root / p).convert("RGB") for p in it["images"]] for it in items]
    model.eval()
    answers = generate_texts(
        model,
        tokenizer,
        prompts,
        images,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        do_sample=False,
    )
    per_type: dict = defaultdict(list)
    chance = {}
    for it, ans in zip(items, answers):
        per_type[it["type"]].append(exact_match(ans, [it["answer"]]))
        chance[it["type"]] = it["chance"]
    return {t: (sum(v) / len(v), chance[t], len(v)) for t, v in per_type.items()}


def format_accuracy(results: dict) -> list[str]:
    return [
        f"held-out accuracy {t}: {100 * acc:.1f}% (chance {100 * ch:.0f}%)"
        for t, (acc, ch, _n) in results.items()
    ]


# ---------------------------------------------------------------------------------------------------------
# entry points


def default_sft_config(overrides: list[str] | None = None) -> Config:
    return load_config(configs_dir() / SFT_CONFIG, overrides)


def default_dpo_config(overrides: list[str] | None = None) -> Config:
    return load_config(configs_dir() / DPO_CONFIG, overrides)


def run_default_sft(overrides: list[str] | None = None) -> dict:
    from xgenmm_lm import XGenMM, build_tokenizer

    from .sft import run_sft

    _cpu_threads()
    config = default_sft_config(overrides)
    run_dir = Path(config.run_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        _fresh_start(config)
        ensure_dataset(run_dir / "data")
    result = run_sft(config)
    if int(os.environ.get("RANK", "0")) != 0 or not config.eval.path:
        return result
    weights = Path(result["checkpoint"]) / "model"
    final = run_dir / "final-model"  # a fixed path for `xgenmm-train dpo` and for users
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(weights, final)
    result["final_model"] = str(final)
    model = XGenMM.from_pretrained(weights)
    tokenizer = build_tokenizer(weights)
    acc = evaluate_heldout(
        model, tokenizer, Path(config.eval.path), config.eval.batch_size, config.eval.max_new_tokens
    )
    lines = format_accuracy(acc)
    (run_dir / "heldout_accuracy.json").write_text(json.dumps(acc, indent=2))
    print("\n".join(lines))
    data_dir = run_dir / "data"
    print(
        "the same held-out set through the local evaluator: uv run xgenmm-eval run "
        f"--model {final} --data {data_dir / 'heldout_llava.json'} --image-folder {data_dir}"
    )
    result["heldout_accuracy"] = {t: a for t, (a, _c, _n) in acc.items()}
    return result


def run_default_dpo(overrides: list[str] | None = None, sft_overrides: list[str] | None = None) -> dict:
    """DPO from the default SFT run's final weights on its synthetic preference pairs (the SFT default runs
    first when its final model is missing). ``sft_overrides`` locate that SFT run (e.g. ``run_dir=...``);
    the DPO paths (model, data, eval) follow it unless ``overrides`` set them."""
    from .dpo import run_dpo

    _cpu_threads()
    sft_config = default_sft_config(sft_overrides)
    sft_dir = Path(sft_config.run_dir)
    data_dir = sft_dir / "data"
    follow = [
        f"model.path={sft_dir / 'final-model'}",
        f"data.path={data_dir / 'dpo_train.json'}",
        f"data.image_folder={data_dir}",
        f"eval.path={data_dir / 'dpo_heldout.json'}",
    ]
    config = default_dpo_config(follow + list(overrides or []))
    if config.model.init == "pretrained" and not Path(config.model.path).is_dir():
        print(f"no default SFT model at {config.model.path}: running the SFT default first", file=sys.stderr)
        run_default_sft(sft_overrides)
    if int(os.environ.get("RANK", "0")) == 0:
        _fresh_start(config)  # reference log-probs of an earlier start model must not be reused
        ensure_dataset(data_dir)
    result = run_dpo(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return result
    acc, n = heldout_reward_accuracy(config, Path(result["checkpoint"]))
    print(f"held-out reward accuracy: {100 * acc:.1f}% on {n} pairs (chance 50%)")
    result["heldout_reward_accuracy"] = acc
    return result


@torch.no_grad()
def heldout_reward_accuracy(config: Config, checkpoint: Path) -> tuple[float, int]:
    """Reward accuracy on the ``eval.path`` pairs → (accuracy, number of pairs): the fraction where the
    policy's implicit reward (log-prob gain over the starting model) of the chosen reply exceeds the rejected's."""
    from xgenmm_lm import XGenMM, build_tokenizer

    from .data import PreferenceCollator, PreferenceDataset
    from .dpo import pair_logps

    ref = XGenMM.from_pretrained(config.model.path).eval()
    tokenizer = build_tokenizer(config.model.path)
    if (checkpoint / "model").is_dir():
        policy = XGenMM.from_pretrained(checkpoint / "model").eval()
    else:
        import peft

        policy = peft.PeftModel.from_pretrained(
            XGenMM.from_pretrained(config.model.path), checkpoint / "adapter"
        ).eval()
    data = PreferenceDataset(config.eval.path, tokenizer, ref, config)
    collate = PreferenceCollator(tokenizer.pad_token_id)
    wins = []
    for s in range(0, len(data), config.eval.batch_size):
        batch = collate([data[i] for i in range(s, min(len(data), s + config.eval.batch_size))])
        pc, pr, _ = pair_logps(policy, batch)
        rc, rr, _ = pair_logps(ref, batch)
        wins += ((pc - rc) > (pr - rr)).tolist()
    return sum(wins) / max(len(wins), 1), len(wins)


__all__ = [
    "configs_dir",
    "default_dpo_config",
    "default_sft_config",
    "ensure_dataset",
    "evaluate_heldout",
    "format_accuracy",
    "heldout_reward_accuracy",
    "run_default_dpo",
    "run_default_sft",
]
