"""Per-record checks and the record -> dataset item path (LAVIS
`sft_data_utils.LazySupervisedDataset.__getitem__`).

`SampleProcessor(record, images)` turns one LLaVA record plus its opened images into the item of the
contract (docs/interfaces.md)::

    {"input_ids": (L,) long, "labels": (L,) long, "pixel_values": [(Np, 3, S, S) per image],
     "image_sizes": [(w, h) per image], "num_tokens": int}

`num_tokens` = L − (#images) + Σ vision_tokens_for(size): the length of the sequence the language model sees
after every `<image>` id is replaced by its block of vision embeddings.
"""

from __future__ import annotations

import io
import os

from PIL import Image

from .sources import SampleRef
from .templates import normalize_messages
from .tokenization import IMAGE_TOKEN, encode_conversation


class BadSample(ValueError):
    """A record that cannot be used; the message says why (the dataset adds file/index/id)."""


def record_messages(record) -> list[dict]:
    """The first check of every reader of records (the SFT and preference datasets, `xgenmm-data check`, the
    tiny tokenizer's corpus): the record is a JSON object and each turn of its `conversations` (if present)
    is an object with a known role and a string value. Returns the turns as `[{"role", "content"}]` ([] when
    the record has no `conversations`); raises `BadSample` naming the problem."""
    if not isinstance(record, dict):
        raise BadSample("record is not a JSON object")
    conv = record.get("conversations")
    if conv is None:
        return []
    if not isinstance(conv, list):
        raise BadSample(f"bad conversation turn: conversations is a {type(conv).__name__}, not a list")
    try:
        return normalize_messages(conv)
    except ValueError as e:
        raise BadSample(f"bad conversation turn: {e}") from None


def prepare_conversations(ref: SampleRef, max_images: int = 4, image_token: str = IMAGE_TOKEN) -> list[dict]:
    """Validate the record's turns and apply the `<image>` rules of the original's `LazySupervisedDataset`;
    returns a new conversation list (the record is not mutated) or raises `BadSample`.

    * single image (`image` is a string): in the first human turn, if `<image>` does not occur exactly once,
      all occurrences are removed, the text stripped and `<image>\\n` prepended; `<image>` elsewhere is an error.
    * `image` list: the total `<image>` count must equal the number of images (<= max_images).
    * no image: any `<image>` is an error (the reference skips these too).
    """
    if ref.error:
        raise BadSample(ref.error)
    conv = ref.record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise BadSample("record without conversations")
    messages = record_messages(ref.record)
    roles = [m["role"] for m in messages]
    body = roles[1:] if roles[0] == "system" else roles
    expected = ["user", "assistant"] * (len(body) // 2)
    if not body or len(body) % 2 or body != expected:
        raise BadSample(f"wrong role order {roles} (want [system], human, gpt, human, gpt, ...)")
    for k, m in enumerate(messages):
        if m["role"] == "assistant" and not m["content"].strip():
            raise BadSample(f"empty reply in turn {k}")
    conv = [{"from": t.get("from", t.get("role")), "value": t.get("value", t.get("content"))} for t in conv]
    counts = [t["value"].count(image_token) for t in conv]
    n_images = len(ref.images)
    if ref.record.get("image") is None:
        if sum(counts):
            raise BadSample(f"{image_token} in a record without images")
        return conv
    if ref.image_is_list:
        if n_images > max_images:
            raise BadSample(f"{n_images} images > max_images={max_images}")
        if sum(counts) != n_images:
            raise BadSample(f"{image_token} count {sum(counts)} != number of images {n_images}")
        return conv
    first_user = next(k for k, m in enumerate(messages) if m["role"] == "user")
    if sum(counts) - counts[first_user]:
        raise BadSample(f"{image_token} outside the first human turn of a single-image record")
    if counts[first_user] != 1:
        text = conv[first_user]["value"].replace(image_token, "").strip()
        conv[first_user] = dict(conv[first_user], value=f"{image_token}\n{text}")
    return conv


# 16-bit / 32-bit single-channel modes: convert("RGB") clips them at 255 (a 16-bit picture turns almost white).
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def image_mode_note(im: Image.Image) -> str | None:
    """What `to_rgb` does to this (opened, not necessarily decoded) image beyond a plain 8-bit RGB copy, or None.
    `xgenmm-data check` counts these per source; they are not errors."""
    if getattr(im, "n_frames", 1) > 1:
        return "animated image (first frame only)"
    if im.mode in HIGH_BIT_DEPTH_MODES:
        return f"{im.mode} image (scaled to 8 bits)"
    if im.mode in ALPHA_MODES:
        return "alpha channel (dropped by convert('RGB'))"
    if "transparency" in im.info:
        return "transparent colour (dropped by convert('RGB'))"
    if im.mode == "CMYK":
        return "CMYK image (converted to RGB without a colour profile)"
    return None


def to_rgb(im: Image.Image) -> Image.Image:
    """An RGB copy of `im`. High-bit-depth grey images (`I;16*`, `I`: 0..65535; `F`: [0, 1] when all its
    values lie there, else 0..65535) are scaled to 0..255 with rounding (values outside the range clip).
    Every other mode (RGBA, palette with transparency, CMYK, the first frame of an animation) goes through
    PIL's `convert("RGB")` unchanged: the released models were trained on those pixels."""
    if im.mode not in HIGH_BIT_DEPTH_MODES:
        return im.convert("RGB")
    if im.mode.startswith("I;16"):
        im = im.convert("I")
    lo, hi = im.getextrema()
    scale = 255.0 if im.mode == "F" and 0.0 <= lo and hi <= 1.0 else 1 / 257
    return im.point(lambda v: v * scale + 0.5).convert("L").convert("RGB")


def image_info(path: str) -> tuple[tuple[int, int], str | None]:
    """((width, height), `image_mode_note`) from the image header (no pixel decoding). Raises `BadSample`
    naming the problem."""
    if not os.path.exists(path):
        raise BadSample(f"missing image file {path}")
    if os.path.getsize(path) == 0:
        raise BadSample(f"0-byte image file {path}")
    try:
        with Image.open(path) as im:
            return im.size, image_mode_note(im)
    except Exception as e:  # PIL raises several types for non-images
        raise BadSample(f"not an image: {path} ({type(e).__name__}: {e})") from None


def image_header_size(path: str) -> tuple[int, int]:
    """(width, height) from the image header (no pixel decoding). Raises `BadSample` naming the problem."""
    return image_info(path)[0]


def open_image(source) -> Image.Image:
    """Decode a path or bytes to an RGB PIL image (fully loaded; `to_rgb`). Raises `BadSample` on any decode
    error."""
    try:
        im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        im.load()
        return to_rgb(im)
    except Exception as e:
        name = "<bytes>" if isinstance(source, bytes) else source
        raise BadSample(f"unreadable image {name} ({type(e).__name__}: {e})") from None


def call_processor(image_processor, image: Image.Image):
    """Run an injected processor; accepts `(pixels, (w, h))` tuples, objects with `.pixel_values` /
    `.image_size` (e.g. xgenmm_vision's AnyResImage) and dicts with those keys. -> (pixels (Np,3,S,S), (w, h))."""
    out = image_processor(image)
    if isinstance(out, tuple) and len(out) == 2:
        pixels, size = out
    elif isinstance(out, dict):
        pixels, size = out["pixel_values"], out.get("image_size", image.size)
    else:
        pixels, size = out.pixel_values, getattr(out, "image_size", image.size)
    if pixels.dim() == 5 and pixels.shape[0] == 1:  # (1, Np, 3, S, S) reference layout
        pixels = pixels[0]
    if pixels.dim() != 4:
        raise BadSample(f"image processor returned pixels of shape {tuple(pixels.shape)}, want (Np, 3, S, S)")
    return pixels, (int(size[0]), int(size[1]))


class SampleProcessor:
    """Record -> item. Holds the injected tokenizer, image processor and `vision_tokens_for`."""

    def __init__(
        self,
        tokenizer,
        image_processor=None,
        vision_tokens_for=None,
        template="phi_3",
        max_length: int | None = 2048,
        max_images: int = 4,
        image_token: str = IMAGE_TOKEN,
    ):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.vision_tokens_for = vision_tokens_for
        self.template = template
        self.max_length = max_length
        self.max_images = max_images
        self.image_token = image_token

    def encode_text(self, ref: SampleRef):
        """(conversations, EncodedConversation) after validation; raises `BadSample`."""
        conv = prepare_conversations(ref, self.max_images, self.image_token)
        try:
            enc = encode_conversation(
                conv, self.tokenizer, ref.template or self.template, self.max_length, self.image_token
            )
        except ValueError as e:  # TokenizationMismatch or a template error
            raise BadSample(f"tokenization: {e}") from None
        if not bool((enc.labels != -100).any()):
            raise BadSample(f"no supervised tokens left after truncation at max_length={self.max_length}")
        if enc.num_image_tokens > len(ref.images) or (
            not enc.truncated and enc.num_image_tokens != len(ref.images)
        ):
            raise BadSample(
                f"{enc.num_image_tokens} {self.image_token} ids after tokenization != {len(ref.images)} images "
                f"(is {self.image_token} a single added token of the tokenizer?)"
            )
        return conv, enc

    def num_tokens(self, enc, image_sizes) -> int:
        """LM positions of an encoded sample: text tokens, each `<image>` replaced by `vision_tokens_for((w, h))`."""
        vision = sum(self.vision_tokens_for(s) for s in image_sizes) if image_sizes else 0
        return len(enc.input_ids) - len(image_sizes) + vision

    def __call__(self, ref: SampleRef, image_sources=None) -> dict:
        """Build the item. `image_sources`: per image a path or bytes (defaults to `ref.images`)."""
        _, enc = self.encode_text(ref)
        sources = list(ref.images if image_sources is None else image_sources)[: enc.num_image_tokens]
        pixel_values, sizes = [], []
        for src in sources:
            pixels, size = call_processor(self.image_processor, open_image(src))
            pixel_values.append(pixels)
            sizes.append(size)
        return {
            "input_ids": enc.input_ids,
            "labels": enc.labels,
            "pixel_values": pixel_values,
            "image_sizes": sizes,
            "num_tokens": self.num_tokens(enc, sizes),
        }


__all__ = [
    "BadSample",
    "prepare_conversations",
    "record_messages",
    "image_header_size",
    "image_info",
    "image_mode_note",
    "open_image",
    "to_rgb",
    "call_processor",
    "SampleProcessor",
]
