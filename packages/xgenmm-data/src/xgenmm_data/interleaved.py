"""Interleaved documents (OBELICS-style JSONL) -> webdataset shards with the images embedded.

One JSON object per line::

    {"texts": ["Intro.", null, "About the bus."], "images": [null, "img/bus.jpg", null], "id": "doc1"}

At each position exactly one of `texts[k]` / `images[k]` is non-null; image paths are local files, relative
to `image_root` (default: the JSONL's folder). Per document the shard gets `KEY.json` = {"texts", "images":
[member name | null], "source", "line", "meta": the other fields} and `KEY.img<k>.<ext>` with the raw image
bytes; `webformats.parse_interleaved` reads it back. Bad documents are skipped and reported by line.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import webdataset as wds

from .processing import BadSample, image_header_size
from .shards import parse_size

logger = logging.getLogger("xgenmm_data")


def check_document(doc, image_root: Path) -> list[str | None]:
    """Validate one record; returns the resolved image path per position (None for text). Raises BadSample."""
    if not isinstance(doc, dict):
        raise BadSample(f"a {type(doc).__name__}, not an object")
    texts, images = doc.get("texts"), doc.get("images")
    if not isinstance(texts, list) or not isinstance(images, list):
        raise BadSample("'texts' and 'images' must be lists")
    if len(texts) != len(images):
        raise BadSample(f"'texts' has {len(texts)} positions, 'images' {len(images)}")
    paths = []
    for k, (t, im) in enumerate(zip(texts, images)):
        if (t is None) == (im is None):
            raise BadSample(f"position {k}: exactly one of texts[{k}] / images[{k}] must be non-null")
        if t is not None and not isinstance(t, str):
            raise BadSample(f"texts[{k}] is a {type(t).__name__}, not a string")
        if im is not None and not isinstance(im, str):
            raise BadSample(f"images[{k}] is a {type(im).__name__}, not a path")
        path = None if im is None else (im if os.path.isabs(im) else str(image_root / im))
        if path is not None:
            image_header_size(path)  # missing / 0-byte / not an image -> BadSample
        paths.append(path)
    if all(p is None for p in paths):
        raise BadSample("document without images")
    if not any(t and t.strip() for t in texts):
        raise BadSample("document without text")
    return paths


def write_interleaved_shards(
    jsonl,
    out_dir,
    image_root=None,
    max_size="1GB",
    max_count: int = 10_000,
    prefix: str = "docs",
) -> dict:
    """Write the documents of `jsonl` to `out_dir/<prefix>-%06d.tar`. Returns {"shards", "written",
    "skipped", "skipped_by_reason", "skipped_lines": [(line, reason), ...] (first 100)}."""
    jsonl = Path(jsonl)
    root = Path(image_root) if image_root is not None else jsonl.parent
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    skipped: Counter = Counter()
    skipped_lines: list = []
    written = 0
    pattern = str(out / f"{prefix}-%06d.tar")
    with (
        open(jsonl, "rb") as f,
        wds.ShardWriter(pattern, maxcount=max_count, maxsize=parse_size(max_size), verbose=0) as sink,
    ):
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                try:
                    doc = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise BadSample(f"unreadable JSON ({type(e).__name__}: {e})") from None
                paths = check_document(doc, root)
            except BadSample as e:
                logger.warning("skipping %s line %d: %s", jsonl, line_no, e)
                skipped[str(e).split(" (")[0].split(":")[0][:60]] += 1
                if len(skipped_lines) < 100:
                    skipped_lines.append((line_no, str(e)))
                continue
            sample = {"__key__": f"{written:09d}"}
            names = []
            for k, p in enumerate(paths):
                if p is None:
                    names.append(None)
                    continue
                names.append(f"img{k}.{Path(p).suffix.lower().lstrip('.') or 'bin'}")
                sample[names[-1]] = Path(p).read_bytes()
            meta = {k: v for k, v in doc.items() if k not in ("texts", "images")}
            record = {
                "texts": doc["texts"],
                "images": names,
                "source": str(jsonl),
                "line": line_no,
                "meta": meta,
            }
            sample["json"] = json.dumps(record, ensure_ascii=False).encode("utf-8")
            sink.write(sample)
            written += 1
    return {
        "shards": sorted(str(p) for p in out.glob(f"{prefix}-*.tar")),
        "written": written,
        "skipped": sum(skipped.values()),
        "skipped_by_reason": dict(skipped),
        "skipped_lines": skipped_lines,
    }


__all__ = ["check_document", "write_interleaved_shards"]
