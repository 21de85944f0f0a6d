"""The two pre-training sample formats inside webdataset shards, and their text with `<image>` markers.

Caption shards are read exactly as img2dataset writes them: per key one image member `KEY.jpg|jpeg|png|webp`
and the caption in `KEY.txt` and/or the `caption` field of `KEY.json` (the `.txt` wins when both are there).

Interleaved shards (written by `xgenmm-data shard --interleaved`, see `interleaved.py`) hold per document
`KEY.json` = `{"texts": [str|null, ...], "images": [member|null, ...], ...}` (one of the two non-null per
position, OBELICS layout) and the images as `KEY.img<k>.<ext>`.

Text layout (open_flamingo `train/data.py` of the original, `preprocess_laion_text` / `preprocess_interleaved`):
one `<image>` per image in document order; `<|endofchunk|>` closes each chunk = an image and the text that
follows it up to the next image, so it stands before every image but the first and at the end::

    caption:      "<image>A red bus.<|endofchunk|>"
    interleaved:  ["Intro.", IMG, "About the bus.", IMG, "About the cat."]
               -> "Intro.<image>About the bus.<|endofchunk|><image>About the cat.<|endofchunk|>"

Text pieces are stripped and joined with one space; no space is kept next to `<image>` / `<|endofchunk|>`.
The tokenizer's end-of-text token is added later, by `PretrainProcessor`.
"""

from __future__ import annotations

import json

from .processing import BadSample
from .tokenization import IMAGE_TOKEN

END_OF_CHUNK = "<|endofchunk|>"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION, INTERLEAVED = "caption", "interleaved"


def _check_markers(text: str, image_token: str, end_of_chunk: str) -> None:
    for marker in (image_token, end_of_chunk):
        if marker in text:
            raise BadSample(f"text contains the marker {marker} (it would add a token without an image)")


def caption_text(caption: str, image_token: str = IMAGE_TOKEN, end_of_chunk: str = END_OF_CHUNK) -> str:
    """`<image>{caption}<|endofchunk|>` (the caption stripped). Raises `BadSample` if the caption itself
    contains `<image>` or `<|endofchunk|>`."""
    _check_markers(caption, image_token, end_of_chunk)
    return f"{image_token}{caption.strip()}{end_of_chunk}"


def interleaved_text(
    pieces: list, image_token: str = IMAGE_TOKEN, end_of_chunk: str = END_OF_CHUNK
) -> tuple[str, int]:
    """`pieces`: per position a text (str) or None for an image. -> (text, number of images). Raises
    `BadSample` if a text contains `<image>` or `<|endofchunk|>`."""
    out, n_images = [], 0
    for piece in pieces:
        if piece is None:
            out.append(end_of_chunk + image_token if n_images else image_token)
            n_images += 1
        elif piece.strip():
            _check_markers(piece, image_token, end_of_chunk)
            out.append(" " + piece.strip())
    text = "".join(out).strip()
    for marker in (image_token, end_of_chunk):
        text = text.replace(" " + marker, marker).replace(marker + " ", marker)
    if n_images:
        text += end_of_chunk
    return text, n_images


def _json(parts: dict, what: str) -> dict:
    try:
        meta = json.loads(parts["json"])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadSample(f"unreadable {what} json ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise BadSample(f"{what} json is a {type(meta).__name__}, not an object")
    return meta


def parse_caption(parts: dict, image_token: str = IMAGE_TOKEN) -> tuple[str, list[bytes]]:
    """img2dataset member group (`{"jpg": bytes, "txt": bytes, "json": bytes, ...}`) -> (text, [image bytes])."""
    image_ext = next((e for e in IMAGE_EXTENSIONS if e in parts), None)
    if image_ext is None:
        raise BadSample(f"missing pair: no image member (has {', '.join(sorted(parts)) or 'nothing'})")
    caption = None
    if "txt" in parts:
        try:
            caption = parts["txt"].decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadSample(f"caption .txt is not UTF-8 ({e})") from None
    if not (caption or "").strip() and "json" in parts:
        caption = _json(parts, "caption").get("caption")
        if caption is not None and not isinstance(caption, str):
            raise BadSample(f"caption field is a {type(caption).__name__}, not a string")
    if caption is None:
        raise BadSample("missing pair: no caption (.txt or .json caption field)")
    if not caption.strip():
        raise BadSample("empty caption")
    return caption_text(caption, image_token), [parts[image_ext]]


def parse_interleaved(parts: dict, image_token: str = IMAGE_TOKEN) -> tuple[str, list[bytes]]:
    """Interleaved member group (`{"json": ..., "img0.jpg": ..., ...}`) -> (text, [image bytes in order])."""
    if "json" not in parts:
        raise BadSample("missing pair: interleaved sample without .json")
    meta = _json(parts, "interleaved")
    texts, images = meta.get("texts"), meta.get("images")
    if not isinstance(texts, list) or not isinstance(images, list) or len(texts) != len(images):
        raise BadSample("interleaved json needs lists 'texts' and 'images' of equal length")
    pieces, data = [], []
    for k, (t, name) in enumerate(zip(texts, images)):
        if (t is None) == (name is None):
            raise BadSample(f"position {k}: exactly one of texts[{k}] / images[{k}] must be non-null")
        if name is None:
            pieces.append(t if isinstance(t, str) else str(t))
            continue
        if name not in parts:
            raise BadSample(f"missing pair: image member {name!r} of position {k} not in the shard")
        pieces.append(None)
        data.append(parts[name])
    text, n_images = interleaved_text(pieces, image_token)
    if not n_images:
        raise BadSample("interleaved document without images")
    if not text.replace(image_token, "").replace(END_OF_CHUNK, "").strip():
        raise BadSample("interleaved document without text")
    return text, data


def parse_sample(parts: dict, kind: str = "auto", image_token: str = IMAGE_TOKEN) -> tuple[str, str, list]:
    """One shard member group -> (kind, text, [image bytes]). `kind` "auto": interleaved when the json has
    `texts`, else caption. Raises `BadSample` naming the problem."""
    if kind == "auto":
        kind = CAPTION
        if "json" in parts and not any(e in parts for e in IMAGE_EXTENSIONS):
            kind = INTERLEAVED if "texts" in _json(parts, "sample") else CAPTION
    if kind == CAPTION:
        return (kind, *parse_caption(parts, image_token))
    if kind == INTERLEAVED:
        return (kind, *parse_interleaved(parts, image_token))
    raise ValueError(f"unknown stream kind {kind!r} (caption, interleaved or auto)")


__all__ = [
    "CAPTION",
    "END_OF_CHUNK",
    "IMAGE_EXTENSIONS",
    "INTERLEAVED",
    "caption_text",
    "interleaved_text",
    "parse_caption",
    "parse_interleaved",
    "parse_sample",
]
