"""A synthetic visual-question dataset in real LLaVA format, for the embedded default SFT and DPO runs (demo).

``make_dataset(out_dir)`` draws coloured shapes on dark canvases of varied sizes (so anyres picks different
grids), saves them as PNG files and writes::

    out_dir/images/000000.png ...
    out_dir/train.json            LLaVA records (single-image, multi-image, multi-turn, text-only)
    out_dir/heldout.json          evaluation items {id, type, image(s), question, answer, chance}
    out_dir/heldout_llava.json    the same items as LLaVA records with `question_type` (for `xgenmm-eval run`)
    out_dir/mixture.yaml          data_path: {train.json: N} (the reference mixture format)
    out_dir/dpo_train.json        preference records {id, image, conversations (prompt), chosen, rejected}
    out_dir/dpo_heldout.json      the same for held-out pairs

Question types (answer vocabulary → chance level of a guess):
colour (6 colours, 16.7 %), shape (4 shapes, 25 %), count (1-4, 25 %), position (4 quadrants, 25 %),
compare (which of two images holds the named colour: 50 %), next (text-only: the number after n, 11.1 %).

Made learnable by a tiny random model in about two minutes of CPU: objects are large and scaled with the
canvas; colour/compare pictures use canvases of all aspect ratios (1×2, 2×1, 1×3, 3×1, 2×2 anyres grids), while
shape/count/position pictures are square (2×2 grid: with ``regroup_mode: crops`` each anyres crop, hence each
perceiver group, holds one quadrant); shapes are white, one size, so they differ in how they fill each quadrant.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

VERSION = "6"  # bump when the generated data changes (the default run regenerates an older dataset)

COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 240),
    "yellow": (240, 220, 40),
    "purple": (170, 60, 220),
    "white": (245, 245, 245),
}
SHAPE_COLOUR = "white"  # of the shape-question pictures
SHAPES = ["circle", "square", "triangle", "cross"]
POSITIONS = ["top left", "top right", "bottom left", "bottom right"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# (width, height) of the canvases: with a 32 px base crop anyres picks a 1×2, 2×1, 1×3, 3×1 or 2×2 grid.
SIZES = [(32, 64), (64, 32), (96, 32), (32, 96), (48, 48), (64, 64), (80, 48), (48, 80)]
# Square canvases (always the 2×2 grid, so each anyres crop holds one quadrant) for the spatial questions.
SQUARE_SIZES = [(48, 48), (64, 64), (80, 80)]

QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "What shape is shown?",
    "count": "How many squares are there?",
    "position": "Where is the shape?",
    "next": "Which number comes after {n}?",
    "compare": "Which image has the {colour} shape, the first or the second?",
}
# A short system turn (LLaVA records may start with one; otherwise phi_3 prepends its long default) keeps the
# tiny model's sequences short. Evaluation prompts use the same system text.
SYSTEM = "Answer briefly."
CHANCE = {"colour": 1 / 6, "shape": 1 / 4, "count": 1 / 4, "position": 1 / 4, "compare": 1 / 2, "next": 1 / 9}


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], colour
) -> None:
    """``shape`` filling the box (x0, y0, x1, y1); the box is scaled with the canvas, so a shape covers the same
    fraction of the (squashed) base crop whatever the canvas size."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    else:  # cross: two bars, 30 % of the box thick
        draw.rectangle((x0 + w * 0.35, y0, x1 - w * 0.35, y1), fill=colour)
        draw.rectangle((x0, y0 + h * 0.35, x1, y1 - h * 0.35), fill=colour)


def _canvas(rng: random.Random, sizes=SIZES) -> Image.Image:
    size = rng.choice(sizes)
    grey = rng.randint(0, 40)
    return Image.new("RGB", size, (grey, grey, grey))


def _quadrant_box(rng: random.Random, w: int, h: int, cell: int, frac: float) -> tuple:
    col, row = cell % 2, cell // 2
    cx = w * (0.25 + 0.5 * col + rng.uniform(-0.03, 0.03))
    cy = h * (0.25 + 0.5 * row + rng.uniform(-0.03, 0.03))
    return (cx - frac * w / 2, cy - frac * h / 2, cx + frac * w / 2, cy + frac * h / 2)


def draw_single(
    rng: random.Random, colour: str, shape: str, position: str | None = None, sizes=SIZES
) -> Image.Image:
    """One shape: large and centred, or filling most of a quadrant when ``position`` is given."""
    img = _canvas(rng, sizes)
    w, h = img.size
    if position is None:
        # one size (80 % of each side): the shapes then differ clearly in how much of each quadrant they fill
        frac = rng.uniform(0.78, 0.82)
        cx, cy = w * (0.5 + rng.uniform(-0.02, 0.02)), h * (0.5 + rng.uniform(-0.02, 0.02))
        box = (cx - frac * w / 2, cy - frac * h / 2, cx + frac * w / 2, cy + frac * h / 2)
    else:
        box = _quadrant_box(rng, w, h, POSITIONS.index(position), rng.uniform(0.36, 0.42))
    _draw_shape(ImageDraw.Draw(img), shape, box, COLOURS[colour])
    return img


def draw_count(rng: random.Random, n: int, sizes=SQUARE_SIZES) -> Image.Image:
    """``n`` squares of one colour, each in its own quadrant."""
    img = _canvas(rng, sizes)
    w, h = img.size
    draw = ImageDraw.Draw(img)
    colour = COLOURS[rng.choice(list(COLOURS))]
    for cell in rng.sample(range(4), n):
        draw.rectangle(_quadrant_box(rng, w, h, cell, 0.36), fill=colour)
    return img


class _Writer:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        self.n = 0

    def save(self, img: Image.Image) -> str:
        rel = f"images/{self.n:06d}.png"
        img.save(self.out_dir / rel)
        self.n += 1
        return rel


def make_item(rng: random.Random, writer: _Writer, qtype: str) -> dict:
    """One question: {type, images (relative paths), question, answer, wrong (a plausible wrong answer)}."""
    if qtype == "colour":
        colour = rng.choice(list(COLOURS))
        images = [writer.save(draw_single(rng, colour, rng.choice(SHAPES)))]
        answer, options = colour, list(COLOURS)
        question = QUESTIONS["colour"]
    elif qtype == "shape":
        shape = rng.choice(SHAPES)
        # white on dark: the tiny encoder then only has to tell the outlines apart, not also undo the colour
        images = [writer.save(draw_single(rng, SHAPE_COLOUR, shape, sizes=SQUARE_SIZES))]
        answer, options = shape, SHAPES
        question = QUESTIONS["shape"]
    elif qtype == "count":
        n = rng.randint(1, 4)
        images = [writer.save(draw_count(rng, n))]
        answer, options = NUMBERS[n], NUMBERS[1:5]
        question = QUESTIONS["count"]
    elif qtype == "position":
        position = rng.choice(POSITIONS)
        shape = rng.choice(SHAPES)
        images = [writer.save(draw_single(rng, rng.choice(list(COLOURS)), shape, position, SQUARE_SIZES))]
        answer, options = position, POSITIONS
        question = QUESTIONS["position"]
    elif qtype == "compare":
        first, second = rng.sample(list(COLOURS), 2)
        target_first = rng.random() < 0.5
        images = [writer.save(draw_single(rng, c, rng.choice(SHAPES))) for c in (first, second)]
        answer, options = ("first" if target_first else "second"), ["first", "second"]
        question = QUESTIONS["compare"].format(colour=first if target_first else second)
    elif qtype == "next":
        n = rng.randint(0, 8)
        images = []
        answer, options = NUMBERS[n + 1], NUMBERS
        question = QUESTIONS["next"].format(n=NUMBERS[n])
    else:
        raise ValueError(f"unknown question type {qtype!r}")
    wrong = rng.choice([o for o in options if o != answer])
    return {"type": qtype, "images": images, "question": question, "answer": answer, "wrong": wrong}


def _human_turn(item: dict) -> str:
    return "".join("<image>\n" for _ in item["images"]) + item["question"]


def _image_field(images: list[str]):
    if not images:
        return {}
    return {"image": images[0] if len(images) == 1 else images}


def to_sft_record(idx: int, item: dict, follow_up: dict | None = None) -> dict:
    """An item as a LLaVA record: a short system turn, the question (``<image>`` per picture), the answer; with
    ``follow_up`` a second question and answer about the same picture."""
    conv = [
        {"from": "system", "value": SYSTEM},
        {"from": "human", "value": _human_turn(item)},
        {"from": "gpt", "value": item["answer"]},
    ]
    if follow_up is not None:  # a second question about the same image (multi-turn)
        conv += [
            {"from": "human", "value": follow_up["question"]},
            {"from": "gpt", "value": follow_up["answer"]},
        ]
    return {"id": f"synth-{idx:06d}", **_image_field(item["images"]), "conversations": conv}


def to_eval_record(item: dict) -> dict:
    """A held-out item as the LLaVA-format record `xgenmm-eval run` reads (reference = the last gpt turn)."""
    record = to_sft_record(0, item)
    record["id"] = item["id"]
    record["question_type"] = item["type"]
    return record


def to_dpo_record(idx: int, item: dict) -> dict:
    """An item as a preference record: the prompt conversation, the right answer chosen, a wrong one rejected."""
    return {
        "id": f"pref-{idx:06d}",
        **_image_field(item["images"]),
        "conversations": [{"from": "system", "value": SYSTEM}, {"from": "human", "value": _human_turn(item)}],
        "chosen": item["answer"],
        "rejected": item["wrong"],
    }


TYPE_WEIGHTS = {"colour": 3, "shape": 4, "count": 3, "position": 4, "compare": 2, "next": 1}


def make_dataset(
    out_dir: str | Path, n_train: int = 4800, n_heldout: int = 480, n_dpo: int = 800, seed: int = 0
):
    """Write the synthetic dataset (see the module docstring) → dict of the written paths."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    writer = _Writer(out_dir)
    types = [t for t, w in TYPE_WEIGHTS.items() for _ in range(w)]

    train = []
    for i in range(n_train):
        if rng.random() < 0.05:  # multi-turn: colour then shape of the same picture
            colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
            image = writer.save(draw_single(rng, colour, shape, sizes=SQUARE_SIZES))
            item = {"images": [image], "question": QUESTIONS["colour"], "answer": colour}
            train.append(to_sft_record(i, item, {"question": QUESTIONS["shape"], "answer": shape}))
        else:
            train.append(to_sft_record(i, make_item(rng, writer, rng.choice(types))))

    heldout_types = list(TYPE_WEIGHTS)
    heldout = []
    for i in range(n_heldout):
        item = make_item(rng, writer, heldout_types[i % len(heldout_types)])
        heldout.append({"id": f"heldout-{i:06d}", **item, "chance": CHANCE[item["type"]]})

    dpo_types = ["colour", "shape", "count", "position"]
    dpo_train = [to_dpo_record(i, make_item(rng, writer, rng.choice(dpo_types))) for i in range(n_dpo)]
    dpo_heldout = [to_dpo_record(i, make_item(rng, writer, dpo_types[i % 4])) for i in range(n_heldout // 2)]

    paths = {
        "train": out_dir / "train.json",
        "heldout": out_dir / "heldout.json",
        "heldout_llava": out_dir / "heldout_llava.json",
        "mixture": out_dir / "mixture.yaml",
        "dpo_train": out_dir / "dpo_train.json",
        "dpo_heldout": out_dir / "dpo_heldout.json",
    }
    paths["train"].write_text(json.dumps(train, indent=1))
    paths["heldout"].write_text(json.dumps(heldout, indent=1))
    paths["heldout_llava"].write_text(json.dumps([to_eval_record(it) for it in heldout], indent=1))
    paths["dpo_train"].write_text(json.dumps(dpo_train, indent=1))
    paths["dpo_heldout"].write_text(json.dumps(dpo_heldout, indent=1))
    paths["mixture"].write_text(
        "# synthetic mixture (reference format: file -> sample count); images relative to this folder\n"
        f"data_path:\n  train.json: {{count: {n_train}, image_root: .}}\n"
    )
    return paths


__all__ = [
    "CHANCE",
    "SYSTEM",
    "COLOURS",
    "POSITIONS",
    "QUESTIONS",
    "SHAPES",
    "make_dataset",
    "make_item",
]
