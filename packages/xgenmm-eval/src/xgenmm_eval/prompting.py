"""Turning user inputs (kit messages, chat questions, eval records) into a query string plus an image list.

Every front end of this package ends in the same place: a query with one `<image>` placeholder per image (in
image order), wrapped by the chat template of `xgenmm_data` (`phi_3` by default), and the images as
RGB PIL images. The rules for where the placeholders go:

* VLMEvalKit / lmms-eval messages (VLMEvalKit `vlmeval/vlm/xgen_mm.py`): items in order; text items are
  concatenated as they are, each image item adds `"<image> "` (with the trailing space VLMEvalKit's own xGen-MM wrapper uses).
* a question typed by a user (chat CLI) or a task context (lmms-eval): if it holds exactly one `<image>` per
  image it is used as is; if it holds none, `"<image>" + sep` per image is put in front (`sep="\\n"`: the
  training layout (LAVIS `sft_data_utils.LazySupervisedDataset`), used by the chat CLI; `sep=" "`:
  VLMEvalKit's layout, used by the lmms-eval plugin); any other count is an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from xgenmm_data.processing import to_rgb

IMAGE_TOKEN = "<image>"


def load_image(image) -> Image.Image:
    """A file path (str / Path) or a PIL image -> an RGB PIL image, converted as in training
    (`xgenmm_data.processing.to_rgb`: 16-bit grey scaled to 8 bits, other modes `convert("RGB")`).
    A missing/unreadable file raises with its path."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except OSError as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def interleave_message(message: Iterable[dict]) -> tuple[str, list]:
    """VLMEvalKit-style message -> (query, image values in order).

    message: `[{"type": "image" | "text", "value": ...}, ...]`; an image value is a file path or a PIL image.
    Each image becomes `"<image> "` at its position; text values are appended unchanged.
    """
    query, images = "", []
    for k, item in enumerate(message):
        kind, value = item.get("type"), item.get("value")
        if kind == "text":
            query += value
        elif kind == "image":
            query += IMAGE_TOKEN + " "
            images.append(value)
        else:
            raise ValueError(f"message item {k}: unsupported type {kind!r} (expected 'text' or 'image')")
    return query, images


def place_images(question: str, num_images: int, sep: str = "\n") -> str:
    """Make `question` hold exactly `num_images` `<image>` placeholders (rules in the module docstring)."""
    found = question.count(IMAGE_TOKEN)
    if found == num_images:
        return question
    if found == 0:
        return (IMAGE_TOKEN + sep) * num_images + question
    raise ValueError(
        f"the question has {found} {IMAGE_TOKEN} placeholder(s) but {num_images} image(s) were given; "
        f"use one placeholder per image or none"
    )


__all__ = ["IMAGE_TOKEN", "load_image", "interleave_message", "place_images"]
