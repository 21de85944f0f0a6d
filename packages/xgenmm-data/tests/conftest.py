"""Shared fixtures: a small Phi-3-like tokenizer trained in code, tiny images and datasets in tmp dirs."""

import json
import os

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Phi-3's added tokens (`microsoft/Phi-3-mini-4k-instruct` added_tokens.json): 32000.. in that order, role
# tokens with rstrip=True; then the xGen-MM ones.
PHI3_ADDED = [
    ("<|endoftext|>", False),
    ("<|assistant|>", True),
    ("<|placeholder1|>", True),
    ("<|placeholder2|>", True),
    ("<|placeholder3|>", True),
    ("<|placeholder4|>", True),
    ("<|system|>", True),
    ("<|end|>", True),
    ("<|placeholder5|>", True),
    ("<|placeholder6|>", True),
    ("<|user|>", True),
    ("<pad>", False),
]
XGENMM_ADDED = ["<image>", "<image placeholder>", "<|endofchunk|>"]

CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "What are the colors of the bus in the image?\nThe bus in the image is white and red.",
    "What feature can be seen on the back of the bus? The back of the bus features an advertisement.",
    "Describe the picture. A cat sits on a red sofa next to a dog.\nHow many animals? Two. Yes, no, maybe.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()-_/\n",
]


def build_phi3_like_tokenizer(vocab_size: int = 400):
    """A byte-free BPE (SentencePiece-style Metaspace) tokenizer laid out like Phi-3's, wrapped in
    `PreTrainedTokenizerFast`; role tokens are added with rstrip=True like the released tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, rstrip=r, lstrip=False, normalized=False) for t, r in PHI3_ADDED])
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in XGENMM_ADDED])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="right",
    )


@pytest.fixture(scope="session")
def tokenizer():
    return build_phi3_like_tokenizer()


def reference_phi3_labels(text: str, tokenizer, max_len: int = 2048):
    """The reference's count-and-skip label algorithm (LAVIS `sft_data_utils.preprocess_phi_3_new`), written
    from its description, as a test oracle.
    Returns (ids, labels) with -100 masks; all -100 on a "tokenization mismatch"."""

    def tok(s):
        return tokenizer(s, add_special_tokens=False)["input_ids"]

    ids = tok(text)[:max_len]
    labels = list(ids)
    total_len = len(ids)
    cur = 0
    pieces = text.split("<|end|>\n")
    for k, piece in enumerate(pieces):
        if piece == "":
            break
        piece = piece + "<|end|>\n"
        if "<|assistant|>\n" in piece:
            n = len(tok(piece)) - len(tok("<|assistant|>\n"))
            cur += n
        elif "<|user|>" in piece:
            piece_ids = tok(piece + "<|assistant|>\n")
            n = len(piece_ids)
            # the slow Phi-3 tokenizer emits a leading "▁" piece here that the reference skips; a tokenizer
            # that starts with the role token has nothing to skip
            if k != 0 and piece_ids[0] != tokenizer.convert_tokens_to_ids("<|user|>"):
                n -= 1
            labels[cur : cur + n] = [-100] * n
            cur += n
        else:
            n = len(tok(piece))
            labels[cur : cur + n] = [-100] * n
            cur += n
    labels[cur:] = [-100] * (len(labels) - cur)
    if cur < max_len and cur != total_len:
        labels = [-100] * len(labels)
    return ids, labels


def make_image(path, size=(64, 48), color=(200, 30, 30), fmt=None):
    Image.new("RGB", size, color).save(path, format=fmt)
    return str(path)


class TinyProcessor:
    """A real (if simple) anyres-like processor: base image + one crop per 32 px column, S=16."""

    def __call__(self, image):
        image = image.convert("RGB")
        w, h = image.size
        n = 1 + max(1, min(3, round(w / max(h, 1))))
        base = torch.tensor(list(image.resize((16, 16)).getdata()), dtype=torch.float32).view(16, 16, 3)
        pixels = base.permute(2, 0, 1).unsqueeze(0).repeat(n, 1, 1, 1) / 127.5 - 1
        return pixels, (w, h)


def tiny_vision_tokens(image_size):
    w, h = image_size
    return 4 * (1 + max(1, min(3, round(w / max(h, 1)))))


@pytest.fixture
def processor():
    return TinyProcessor()


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


@pytest.fixture
def ref_labels():
    return reference_phi3_labels


@pytest.fixture
def helpers():
    """Helper functions for tests (conftest is not importable under --import-mode=importlib)."""

    class H:
        pass

    h = H()
    h.make_image = make_image
    h.write_json = write_json
    h.vision_tokens = tiny_vision_tokens
    h.TinyProcessor = TinyProcessor
    h.build_tokenizer = build_phi3_like_tokenizer
    return h


def _conv(q, a, turns=1):
    out = []
    for t in range(turns):
        out += [{"from": "human", "value": q if t == 0 else "What color?"}, {"from": "gpt", "value": a}]
    return out


def build_good_records(img_dir):
    """A small valid dataset: single image, multi-image, multi-turn and text-only records."""
    img_dir.mkdir(exist_ok=True)
    make_image(img_dir / "a.jpg", (64, 48))
    make_image(img_dir / "b.png", (32, 96), (10, 200, 10))
    make_image(img_dir / "c.jpg", (96, 32), (10, 10, 200))
    return [
        {"id": "single", "image": "a.jpg", "conversations": _conv("<image>\nWhat color?", "The bus is red.")},
        {"id": "noimgtoken", "image": "b.png", "conversations": _conv("Describe the picture.", "A cat.")},
        {
            "id": "multi",
            "image": ["a.jpg", "c.jpg"],
            "conversations": _conv("Look at <image> and <image>. How many animals?", "Two.", turns=2),
        },
        {"id": "text", "conversations": _conv("What color?", "red", turns=3)},
    ]


@pytest.fixture
def good_data(tmp_path):
    recs = build_good_records(tmp_path / "img")
    path = write_json(tmp_path / "good.json", recs)
    return {"path": path, "image_root": str(tmp_path / "img"), "records": recs, "dir": tmp_path}
