"""The embedded default SFT run: ``uv run xgenmm-train``.

Generate the synthetic dataset into ``<run_dir>/data`` (once), train the tiny model from
``configs/default-sft.yaml`` through the real pipeline, then greedy-generate answers for the held-out split
and print ``held-out accuracy <type>: NN.N% (chance NN%)`` per question type.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from PIL import Image

from xgenmm_data import build_prompt
from xgenmm_data.metrics import exact_match
from xgenmm_lm import XGenMM, build_tokenizer
from xgenmm_lm.inference import generate_texts

from ..config import Config, load_config
from ..sft import run_sft
from .common import (
    configs_dir,
    cpu_threads,
    format_accuracy,
    fresh_start,
    is_rank0,
    keep_final_model,
    versioned_data,
)
from .sft_data import SYSTEM, VERSION, make_dataset

SFT_CONFIG = "default-sft.yaml"


def default_sft_config(overrides: list[str] | None = None) -> Config:
    """``configs/default-sft.yaml`` with dotted ``overrides``."""
    return load_config(configs_dir() / SFT_CONFIG, overrides)


def ensure_dataset(data_dir: Path) -> dict:
    """Generate the synthetic dataset into ``data_dir`` unless a complete one of the current version is there."""
    names = ("train", "heldout", "heldout_llava", "mixture", "dpo_train", "dpo_heldout")
    files = {k: data_dir / f"{k}.{'yaml' if k == 'mixture' else 'json'}" for k in names}
    return versioned_data(data_dir, VERSION, make_dataset, files)


def evaluate_heldout(model, tokenizer, heldout: Path, batch_size: int = 64, max_new_tokens: int = 6) -> dict:
    """Greedy answers for the held-out items → {type: (accuracy, chance, n)}."""
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


def run_default_sft(overrides: list[str] | None = None) -> dict:
    """The default SFT run (see the module docstring) → ``run_sft``'s summary plus ``final_model`` and
    ``heldout_accuracy`` ({type: accuracy})."""
    cpu_threads()
    config = default_sft_config(overrides)
    run_dir = Path(config.run_dir)
    if is_rank0():
        fresh_start(config)
        ensure_dataset(run_dir / "data")
    result = run_sft(config)
    if not is_rank0() or not config.eval.path:
        return result
    weights = Path(result["checkpoint"]) / "model"
    final = keep_final_model(weights, run_dir)  # for `xgenmm-train dpo` and for users
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


__all__ = ["default_sft_config", "ensure_dataset", "evaluate_heldout", "run_default_sft"]
