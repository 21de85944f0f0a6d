"""Shared fixtures: a tokenizer trained in code, the tiny config, tiny models and small images."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from PIL import Image

from xgenmm_lm import XGenMM, tiny_config, train_tiny_tokenizer

CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "What is in the image? A red square on a black background.",
    "Look at this image and this image. What is in the second image? A black and white cat.",
    "The bus in the image is white and red. The back of the bus features an advertisement.",
    "hello world, the quick brown fox jumps over the lazy dog 0123456789",
]


@pytest.fixture(scope="session")
def tokenizer():
    return train_tiny_tokenizer(CORPUS * 4, vocab_size=200)


@pytest.fixture(scope="session")
def config(tokenizer):
    return tiny_config(tokenizer)


@pytest.fixture
def model(config):
    torch.manual_seed(0)
    return XGenMM.from_config(config).eval()


@pytest.fixture(scope="session")
def images():
    """Three images of different aspect ratios (tiny base 32: grids 1x2, 2x2, 3x1)."""
    torch.manual_seed(1)
    out = []
    for size in [(30, 30), (64, 48), (100, 25)]:
        pixels = (torch.rand(size[1], size[0], 3) * 255).to(torch.uint8).numpy()
        out.append(Image.fromarray(pixels))
    return out


def encode(tokenizer, texts, padding_side="right"):
    """Tokenize and pad by hand: (input_ids, attention_mask)."""
    ids = [tokenizer(t).input_ids for t in texts]
    length = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), length), tokenizer.pad_token_id)
    mask = torch.zeros(len(ids), length, dtype=torch.long)
    for b, seq in enumerate(ids):
        sl = slice(0, len(seq)) if padding_side == "right" else slice(length - len(seq), length)
        input_ids[b, sl] = torch.tensor(seq)
        mask[b, sl] = 1
    return input_ids, mask


@pytest.fixture(scope="session")
def encode_fn():
    return encode
