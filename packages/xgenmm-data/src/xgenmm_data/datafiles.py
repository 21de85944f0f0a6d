"""Reading LLaVA-format data files: `.json` lists, `.jsonl` files and folders of them, UTF-8 checked.

Every problem is a `DataError` naming the file (and the line, column or byte offset), never a bare traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class DataError(Exception):
    """A fatal data problem (missing data file, unreadable JSON ...). `problems` lists every one found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def decode_utf8(data: bytes, path: Path, start: int = 0) -> str:
    """UTF-8 text of `data` (bytes from offset `start` of `path`); invalid UTF-8 is a `DataError` naming the
    byte offset in the file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            [
                f"{path}: invalid UTF-8 at byte offset {start + e.start} ({e.reason}); re-encode the file as UTF-8"
            ]
        ) from None


def _read_json(path: Path) -> list:
    text = decode_utf8(path.read_bytes(), path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError([f"{path}:{e.lineno}:{e.colno}: unreadable JSON: {e.msg}"]) from None
    if not isinstance(data, list):
        raise DataError([f"{path}: expected a JSON list of records, got {type(data).__name__}"])
    return data


def _read_jsonl(path: Path) -> list:
    records, offset = [], 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = decode_utf8(raw, path, offset)
            offset += len(raw)
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError([f"{path}:{lineno}:{e.colno}: unreadable JSON: {e.msg}"]) from None
    return records


def data_files(path: str | os.PathLike) -> list[Path]:
    """The data files behind `path`: the file itself, or the sorted `*.json`/`*.jsonl` of a folder."""
    p = Path(path)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.suffix in (".json", ".jsonl"))
    if not p.exists():
        raise DataError([f"{p}: data file not found"])
    return [p]


def load_records(path: str | os.PathLike) -> list[dict]:
    """Records of a `.json` list, a `.jsonl` file, or a folder of them (concatenated in name order)."""
    records = []
    for f in data_files(path):
        records.extend(_read_jsonl(f) if f.suffix == ".jsonl" else _read_json(f))
    return records


__all__ = ["DataError", "data_files", "load_records"]
