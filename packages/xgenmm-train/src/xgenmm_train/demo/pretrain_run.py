"""The embedded default pre-training run: ``uv run xgenmm-train pretrain`` (a CPU demo; no real recipe imports it).

1. writes the demo data into ``<run_dir>/data`` once (``pretrain_data``: img2dataset caption shards,
   interleaved document shards, their stream mixture, held-out pictures);
2. writes the "pretrained" parts into ``<run_dir>/parts`` once: a tiny Phi-3-shaped LM with a tokenizer trained in
   code, and a tiny SigLIP tower (both random: stand-ins for the hub models a real run composes);
3. trains through the real pipeline (``configs/default-pretrain.yaml``: ``model.init=compose``, streamed shards,
   packed rows, DeepSpeed);
4. greedy-generates a caption for each held-out picture from the prompt ``<image>`` and prints, per attribute
   named in the caption, ``held-out accuracy colour: NN.N% (chance 17%)``;
5. prints the ``xgenmm-train sft model.path=...`` command that fine-tunes the result on the SFT demo.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image
from transformers import Phi3Config, Phi3ForCausalLM, SiglipVisionConfig

from xgenmm_lm import XGenMM, build_tokenizer, train_tiny_tokenizer
from xgenmm_lm.inference import generate_texts
from xgenmm_vision import SiglipVisionEncoder

from ..config import Config, load_config
from ..pretrain import run_pretrain
from .common import (
    configs_dir,
    cpu_threads,
    format_accuracy,
    fresh_start,
    is_rank0,
    keep_final_model,
    versioned_data,
)
from .pretrain_data import ATTRIBUTES, CHANCE, VERSION, corpus, make_pretrain_data, parse_caption

PRETRAIN_CONFIG = "default-pretrain.yaml"


def default_pretrain_config(overrides: list[str] | None = None) -> Config:
    """``configs/default-pretrain.yaml`` with dotted ``overrides``."""
    return load_config(configs_dir() / PRETRAIN_CONFIG, overrides)


def ensure_data(data_dir: Path) -> dict:
    """Generate the demo shards into ``data_dir`` unless a complete set of the current version is there."""
    files = {"mixture": data_dir / "mixture.yaml", "heldout": data_dir / "heldout.json"}
    return versioned_data(data_dir, VERSION, make_pretrain_data, files)


def ensure_parts(config: Config) -> None:
    """The tiny stand-ins for a pretrained LM (+ tokenizer) and SigLIP at ``model.text_model`` / ``vision_model``."""
    lm_dir, vision_dir = Path(config.model.text_model), Path(config.model.vision_model)
    if (lm_dir / "config.json").is_file() and (vision_dir / "config.json").is_file():
        return
    torch.manual_seed(config.train.seed)
    tokenizer = train_tiny_tokenizer(corpus(), vocab_size=300)
    n = len(tokenizer)
    lm = Phi3ForCausalLM(
        Phi3Config(
            vocab_size=-(-n // 64) * 64,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=1024,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
    )
    lm.save_pretrained(lm_dir)
    tokenizer.save_pretrained(lm_dir)
    vision = SiglipVisionEncoder.from_config(
        SiglipVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    )
    vision.save_pretrained(vision_dir)


@torch.no_grad()
def evaluate_captions(
    model, tokenizer, heldout: Path, batch_size: int = 64, max_new_tokens: int = 12
) -> tuple[dict, list[str]]:
    """Greedy captions of the held-out pictures from the prompt ``<image>`` → ({attribute: (accuracy, chance,
    n)}, the captions); an attribute is right when the first value of it the caption names is the picture's."""
    items = json.loads(heldout.read_text())
    images = [Image.open(heldout.parent / it["image"]).convert("RGB") for it in items]
    model.eval()
    captions = generate_texts(
        model,
        tokenizer,
        ["<image>"] * len(items),
        images,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
    )
    right = defaultdict(list)
    for it, text in zip(items, captions):
        found = parse_caption(text)
        for name in ATTRIBUTES:
            right[name].append(found[name] == it[name])
    return {name: (sum(v) / len(v), CHANCE[name], len(v)) for name, v in right.items()}, captions


def run_default_pretrain(overrides: list[str] | None = None) -> dict:
    """The default pre-training run (see the module docstring) → ``run_pretrain``'s summary plus
    ``final_model``, ``heldout_accuracy`` ({attribute: accuracy}) and ``sft_command``."""
    cpu_threads()
    config = default_pretrain_config(overrides)
    run_dir = Path(config.run_dir)
    rank0 = is_rank0()
    if rank0:
        fresh_start(config)
        ensure_data(run_dir / "data")
        ensure_parts(config)
    result = run_pretrain(config)
    if not rank0 or not config.eval.path:
        return result
    weights = Path(result["checkpoint"]) / "model"
    final = keep_final_model(weights, run_dir)  # a fixed path for the SFT command below
    result["final_model"] = str(final)
    model = XGenMM.from_pretrained(final)
    tokenizer = build_tokenizer(final)
    acc, captions = evaluate_captions(
        model, tokenizer, Path(config.eval.path), config.eval.batch_size, config.eval.max_new_tokens
    )
    (run_dir / "heldout_accuracy.json").write_text(json.dumps(acc, indent=2))
    (run_dir / "heldout_captions.json").write_text(json.dumps(captions, indent=1))
    print("\n".join(format_accuracy(acc)))
    print(f"examples: {captions[:3]}")
    command = f"uv run xgenmm-train sft model.init=pretrained model.path={final}"
    print(f"fine-tune it on the SFT demo: {command}")
    result["heldout_accuracy"] = {t: a for t, (a, _c, _n) in acc.items()}
    result["sft_command"] = command
    return result


__all__ = [
    "default_pretrain_config",
    "ensure_data",
    "ensure_parts",
    "evaluate_captions",
    "run_default_pretrain",
]
