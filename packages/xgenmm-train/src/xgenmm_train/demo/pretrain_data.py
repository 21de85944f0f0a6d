"""Synthetic pre-training shards for the embedded default pre-training run (demo only: no real recipe imports it).

``make_pretrain_data(out_dir)`` draws one coloured shape in one quadrant of a dark square canvas (the SFT demo's
renderer, ``sft_data.draw_single``) and writes, in the formats real pre-training data comes in::

    out_dir/captions/captions-00000.tar ...   caption shards as img2dataset writes them: KEY.png + KEY.txt + KEY.json
    out_dir/docs.jsonl, out_dir/doc-images/   interleaved documents (OBELICS layout: texts / images per position)
    out_dir/interleaved/docs-000000.tar ...   the same written by xgenmm_data.write_interleaved_shards
                                              (what `xgenmm-data shard --interleaved` does)
    out_dir/mixture.yaml                      the stream mixture: captions 0.6, interleaved 0.4
    out_dir/heldout/000000.png ..., heldout.json   held-out pictures {image, colour, shape, position, caption}

Pictures: 64 or 80 px square canvases, one shape in one quadrant, in its colour with a white rim.

A caption names the colour, the shape and the position: ``a red circle in the top left``. A document is a title
line, then two or three pictures each followed by its caption. Attributes and their chance level:
colour (6, 16.7 %), shape (4, 25 %), position (4 quadrants, 25 %).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import webdataset as wds
from PIL import ImageDraw

from xgenmm_data import write_interleaved_shards

from .sft_data import (
    COLOURS,
    NUMBERS,
    POSITIONS,
    QUESTIONS,
    SHAPES,
    SYSTEM,
    _canvas,
    _draw_shape,
    _quadrant_box,
)

VERSION = "2"  # bump when the generated data changes (the default run regenerates an older one)
ATTRIBUTES = {"colour": list(COLOURS), "shape": SHAPES, "position": POSITIONS}
CHANCE = {name: 1 / len(values) for name, values in ATTRIBUTES.items()}
TITLES = ["Some shapes.", "Shapes on a dark background.", "A page of pictures.", "Look at these."]


def caption(colour: str, shape: str, position: str) -> str:
    """The caption of a picture, e.g. ``a red circle in the top left``."""
    return f"a {colour} {shape} in the {position}"


def parse_caption(text: str) -> dict:
    """The attributes a generated caption names (None where it names none): the first of each found."""
    found = {}
    for name, values in ATTRIBUTES.items():
        hits = [(text.find(v), v) for v in values if v in text]
        found[name] = min(hits)[1] if hits else None
    return found


SIZES = [(64, 64), (80, 80)]  # square: the 2x2 anyres grid of the demo's 32 px crops, one quadrant per crop


def draw_picture(rng: random.Random, colour: str, shape: str, position: str):
    """One shape filling most of one quadrant of a dark square canvas (the SFT demo's renderer), in its colour
    with a 2 px white rim: the rim gives every colour the same outline, so the tiny random vision tower learns
    the shapes in minutes (without it the shape stayed at chance for 340 steps, measured)."""
    image = _canvas(rng, SIZES)
    box = _quadrant_box(rng, *image.size, POSITIONS.index(position), rng.uniform(0.42, 0.46))
    draw = ImageDraw.Draw(image)
    _draw_shape(draw, shape, box, (255, 255, 255))
    x0, y0, x1, y1 = box
    _draw_shape(draw, shape, (x0 + 2, y0 + 2, x1 - 2, y1 - 2), COLOURS[colour])
    return image


def _picture(rng: random.Random):
    colour, shape, position = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(POSITIONS)
    return draw_picture(rng, colour, shape, position), colour, shape, position


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_caption_shards(out: Path, rng: random.Random, n: int, per_shard: int) -> list[Path]:
    """img2dataset layout: per key KEY.png, KEY.txt (the caption) and KEY.json ({caption, key, status, ...})."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(0, n, per_shard):
        path = out / f"captions-{s // per_shard:05d}.tar"
        with wds.TarWriter(str(path)) as w:
            for i in range(s, min(n, s + per_shard)):
                image, colour, shape, position = _picture(rng)
                key = f"{s // per_shard:05d}{i - s:04d}"
                text = caption(colour, shape, position)
                meta = {"caption": text, "key": key, "status": "success", "width": image.width}
                w.write(
                    {
                        "__key__": key,
                        "png": _png(image),
                        "txt": text.encode(),
                        "json": json.dumps(meta).encode(),
                    }
                )
        paths.append(path)
    return paths


def write_documents(out_dir: Path, rng: random.Random, n: int) -> Path:
    """OBELICS-style JSONL: per document `texts` / `images` lists (one of the two non-null per position)."""
    images_dir = out_dir / "doc-images"
    images_dir.mkdir(parents=True, exist_ok=True)
    lines, k = [], 0
    for d in range(n):
        texts, images = [rng.choice(TITLES)], [None]
        for _ in range(rng.randint(2, 3)):
            image, colour, shape, position = _picture(rng)
            name = f"{k:06d}.png"
            image.save(images_dir / name)
            k += 1
            texts += [None, caption(colour, shape, position) + "."]
            images += [name, None]
        lines.append(json.dumps({"id": f"doc-{d:05d}", "texts": texts, "images": images}))
    path = out_dir / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_pretrain_data(
    out_dir: str | Path,
    n_captions: int = 12_000,
    n_documents: int = 2_000,
    n_heldout: int = 240,
    per_shard: int = 1000,
    seed: int = 0,
) -> dict:
    """Write the demo shards, mixture and held-out set (see the module docstring) → dict of the written paths."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    write_caption_shards(out_dir / "captions", rng, n_captions, per_shard)
    docs = write_documents(out_dir, rng, n_documents)
    write_interleaved_shards(
        docs, out_dir / "interleaved", image_root=out_dir / "doc-images", max_count=per_shard
    )
    mixture = out_dir / "mixture.yaml"
    mixture.write_text(
        "# demo stream mixture: img2dataset caption shards and interleaved document shards\n"
        "seed: 0\nshuffle: 500\nepochs: null\nstreams:\n"
        "  captions: {urls: captions/, weight: 0.6, kind: caption}\n"
        "  interleaved: {urls: interleaved/, weight: 0.4, kind: interleaved}\n"
    )
    (out_dir / "heldout").mkdir(exist_ok=True)
    heldout = []
    for i in range(n_heldout):
        image, colour, shape, position = _picture(rng)
        rel = f"heldout/{i:06d}.png"
        image.save(out_dir / rel)
        heldout.append(
            {
                "image": rel,
                "colour": colour,
                "shape": shape,
                "position": position,
                "caption": caption(colour, shape, position),
            }
        )
    (out_dir / "heldout.json").write_text(json.dumps(heldout, indent=1))
    return {"mixture": mixture, "heldout": out_dir / "heldout.json", "docs": docs}


def corpus() -> list[str]:
    """Texts for the demo's tokenizer: every caption word, the titles, and the SFT demo's questions (so the
    tokenizer also serves the SFT run that continues from the pre-trained model)."""
    texts = [caption(c, s, p) + "." for c in COLOURS for s in SHAPES for p in POSITIONS]
    texts += TITLES + [SYSTEM] + list(QUESTIONS.values()) + NUMBERS + ["first", "second"]
    return texts * 4


__all__ = ["ATTRIBUTES", "CHANCE", "caption", "corpus", "make_pretrain_data", "parse_caption"]
