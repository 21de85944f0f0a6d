"""Shared fixtures: a tiny random xGen-MM checkpoint saved with `save_pretrained`, and small images."""

import os

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPUS = [
    "What colour is the bus? The bus is red and white.",
    "How many cats are in the picture? There are two cats.",
    "Answer with the option's letter from the given choices directly. A B C D",
    "yes no maybe one two three four five red green blue",
] * 4


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """Folder of a tiny random checkpoint (model + tokenizer), as `XGenMM.save_pretrained` writes it."""
    from xgenmm_lm import XGenMM, tiny_config, train_tiny_tokenizer

    torch.manual_seed(0)
    tokenizer = train_tiny_tokenizer(CORPUS, vocab_size=300)
    model = XGenMM.from_config(tiny_config(tokenizer)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    model.save_pretrained(path, tokenizer=tokenizer)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt):
    """(model, tokenizer) loaded back from `tiny_ckpt` through this package's loader (CPU, fp32)."""
    from xgenmm_eval import load_model

    return load_model(tiny_ckpt, device="cpu")


@pytest.fixture(scope="session")
def image_files(tmp_path_factory):
    """Three small RGB images of different sizes/aspect ratios (so anyres picks different grids)."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for name, size, colour in [("red.png", (40, 30), (200, 10, 10)), ("tall.png", (20, 60), (10, 200, 10)),
                               ("wide.png", (90, 24), (10, 10, 200))]:  # fmt: skip
        path = folder / name
        Image.new("RGB", size, colour).save(path)
        paths.append(path)
    return paths
