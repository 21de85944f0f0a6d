"""Evaluation records: LLaVA-format samples whose last `gpt` turn is the reference answer.

One record (JSON list or JSON lines):

    {"id": "q1",
     "image": "img/1.jpg"  |  ["a.jpg", "b.jpg"]   (optional; relative paths are under the image folder),
     "conversations": [{"from": "human", "value": "<image>\\nWhat colour is the bus?"},
                       {"from": "gpt", "value": "red"}],
     "question_type": "color",            (optional; also read from "category"; default "all")
     "answers": ["red", "red", "maroon"], (optional; VQA-style list of human answers, else [last gpt value])
     "options": ["cat", "dog"]}           (optional, for --metric choice: texts of options A, B, ... or a dict
                                           letter -> text; else parsed from "A. cat" / "B) dog" query lines)

The query is the last human turn before the last gpt turn; earlier turns become the prompt's history.
Image placeholders follow the training rule (LAVIS `sft_data_utils.LazySupervisedDataset`): with a single
image, a record whose human turns do not hold exactly one `<image>` gets them all removed and `<image>\\n` put
in front of the first human turn; with several images the count must match.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .prompting import IMAGE_TOKEN


@dataclass
class EvalRecord:
    """One evaluation question, ready to prompt (images are paths, loaded at generation time)."""

    id: str
    query: str
    history: list[dict] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    question_type: str = "all"
    options: dict[str, str] = field(default_factory=dict)


_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.+?)\s*$", re.MULTILINE)


def parse_options(query: str) -> dict[str, str]:
    """Multiple-choice options written one per line as "A. text", "(B) text", "C) text" or "D: text"."""
    return {m.group(1): m.group(2) for m in _OPTION_LINE.finditer(query)}


def _read_json_records(path: Path) -> list:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: invalid UTF-8 at byte offset {err.start} ({err.reason}); re-encode the file as UTF-8"
        ) from None
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {n} is not valid JSON: {err}") from err
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _fix_single_image(turns: list[dict]) -> list[dict]:
    """The training single-image rule, applied over all human turns."""
    human = [t for t in turns if t["from"] == "human"]
    if sum(t["value"].count(IMAGE_TOKEN) for t in human) == 1:
        return turns
    fixed, first = [], True
    for t in turns:
        if t["from"] == "human":
            value = t["value"].replace(IMAGE_TOKEN, "").strip()
            if first:
                value, first = IMAGE_TOKEN + "\n" + value, False
            t = {**t, "value": value}
        fixed.append(t)
    return fixed


def parse_record(raw: dict, image_folder: Path, where: str) -> EvalRecord:
    """One raw record -> `EvalRecord`; `where` names the record in error messages (file and index)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a record must be an object")
    conv = raw.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise ValueError(f"{where}: missing 'conversations'")
    turns = []
    for k, t in enumerate(conv):
        role = t.get("from") if isinstance(t, dict) else None
        if role not in ("human", "gpt", "system") or not isinstance(t.get("value"), str):
            raise ValueError(f"{where}: turn {k} needs 'from' in human/gpt/system and a string 'value'")
        turns.append({"from": role, "value": t["value"]})
    last_gpt = max((k for k, t in enumerate(turns) if t["from"] == "gpt"), default=None)
    if last_gpt is None:
        raise ValueError(f"{where}: no 'gpt' turn to use as the reference answer")
    if last_gpt == 0 or turns[last_gpt - 1]["from"] != "human":
        raise ValueError(f"{where}: the last 'gpt' turn must follow a 'human' turn")

    images = raw.get("image")
    images = [] if images is None else [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise ValueError(f"{where}: 'image' must be a path or a list of paths")
    turns = turns[: last_gpt + 1]
    if len(images) == 1:
        turns = _fix_single_image(turns)
    n_tok = sum(t["value"].count(IMAGE_TOKEN) for t in turns if t["from"] == "human")
    if n_tok != len(images):
        raise ValueError(f"{where}: {n_tok} {IMAGE_TOKEN} placeholder(s) for {len(images)} image(s)")

    answers = raw.get("answers")
    if answers is None:
        references = [turns[last_gpt]["value"]]
    elif isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers):
        references = list(answers)
    else:
        raise ValueError(f"{where}: 'answers' must be a non-empty list of strings")

    options = raw.get("options")
    query = turns[last_gpt - 1]["value"]
    if options is None:
        options = parse_options(query)
    elif isinstance(options, list) and all(isinstance(o, str) for o in options) and len(options) <= 26:
        options = {chr(ord("A") + i): o for i, o in enumerate(options)}
    elif not (isinstance(options, dict) and all(isinstance(k, str) and len(k) == 1 for k in options)):
        raise ValueError(f"{where}: 'options' must be a list of option texts or a dict letter -> text")

    qtype = raw.get("question_type", raw.get("category", "all"))
    return EvalRecord(
        id=str(raw.get("id", where)),
        query=query,
        history=turns[: last_gpt - 1],
        images=[(image_folder / p) for p in images],
        references=references,
        question_type=str(qtype),
        options={k: str(v) for k, v in options.items()},
    )


def load_eval_records(path, image_folder=None) -> list[EvalRecord]:
    """Read a LLaVA-format eval file (`.json` list or `.jsonl`). Relative image paths are resolved against
    `image_folder` (default: the file's directory). Bad records raise ValueError naming file and index."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"eval data not found: {path}")
    folder = Path(image_folder) if image_folder is not None else path.parent
    rows = _read_json_records(path)
    if not rows:
        raise ValueError(f"{path}: no records")
    return [parse_record(raw, folder, f"{path} record {i}") for i, raw in enumerate(rows)]


__all__ = ["EvalRecord", "load_eval_records", "parse_options", "parse_record"]
