"""Webdataset tar shards: write a mixture once, stream it many times.

`write_shards(refs, out_dir, max_size)` stores, per selected record (mixing and path mapping already
applied), one tar member `<key>.json` with the record and its provenance plus `<key>.img<k>.<ext>` with the
raw bytes of each image. `ShardDataset` streams the shards (shard split over ranks and DataLoader workers,
optional shuffle buffer and resampling) and turns each sample into the same item as `SupervisedDataset`.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from itertools import islice
from pathlib import Path

import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from .processing import BadSample, SampleProcessor, image_header_size, prepare_conversations
from .sources import DataError, SampleRef
from .tokenization import IMAGE_TOKEN

logger = logging.getLogger("xgenmm_data")

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


def parse_size(text) -> int:
    """'1GB' / '500MB' / '1.5GiB' / 1000 -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    s = str(text).strip().upper().replace(" ", "")
    num = s.rstrip("KMGTIB")
    unit = s[len(num) :]
    if unit not in _UNITS or not num:
        raise ValueError(f"cannot parse size {text!r} (use e.g. 500MB, 1GB)")
    return int(float(num) * _UNITS[unit])


def write_shards(
    refs: list[SampleRef],
    out_dir: str | os.PathLike,
    max_size="1GB",
    max_count: int = 100_000,
    prefix: str = "shard",
    max_images: int = 4,
) -> dict:
    """Write `refs` to `out_dir/<prefix>-%06d.tar`. Records with problems (turns, `<image>` rules, missing or
    non-image files) are skipped, logged and counted. Returns {"shards": [...], "written": n, "skipped": n,
    "skipped_by_reason": {...}}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    skipped: Counter = Counter()
    written = 0
    pattern = str(out / f"{prefix}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=max_count, maxsize=parse_size(max_size), verbose=0) as sink:
        for ref in refs:
            try:
                prepare_conversations(ref, max_images)
                for p in ref.images:
                    image_header_size(p)
            except BadSample as e:
                logger.warning("skipping %s: %s", ref.where(), e)
                skipped[str(e).split(" (")[0][:60]] += 1
                continue
            sample = {"__key__": f"{written:09d}"}
            names = []
            for k, p in enumerate(ref.images):
                ext = Path(p).suffix.lower().lstrip(".") or "bin"
                names.append(f"img{k}.{ext}")
                sample[names[-1]] = Path(p).read_bytes()
            meta = {
                "record": ref.record,
                "source": ref.source,
                "index": ref.index,
                "image_is_list": ref.image_is_list,
                "images": names,
                "template": ref.template,
            }
            sample["json"] = json.dumps(meta).encode("utf-8")
            sink.write(sample)
            written += 1
    shards = sorted(str(p) for p in out.glob(f"{prefix}-*.tar"))
    return {
        "shards": shards,
        "written": written,
        "skipped": sum(skipped.values()),
        "skipped_by_reason": dict(skipped),
    }


def _expand(urls) -> list[str]:
    if isinstance(urls, (str, os.PathLike)):
        p = Path(urls)
        if p.is_dir():
            return sorted(str(q) for q in p.glob("*.tar"))
        return list(wds.shardlists.expand_urls(str(urls)))
    return [str(u) for u in urls]


class ShardDataset(IterableDataset):
    """Stream items (the `SupervisedDataset` item dict) from shards written by `write_shards`.

    Args:
        urls: a folder of `.tar` files, a brace pattern ("shards/shard-{000000..000009}.tar") or a list.
        tokenizer, image_processor, vision_tokens_for, template, max_length, max_images: as SupervisedDataset.
        shuffle: shuffle-buffer size (0 = keep shard order); shards are shuffled too when > 0.
        resampled: sample shards with replacement forever (for step-based training).
        rank, world_size: shards are split over ranks (rank r takes shards r, r+W, ...), then over workers.
        seed: seeds shard / buffer shuffling together with `set_epoch`.
        max_bad_fraction: fail once more than this fraction of the samples read were bad (after 100 samples).
    """

    def __init__(
        self,
        urls,
        tokenizer,
        image_processor=None,
        vision_tokens_for=None,
        template="phi_3",
        max_length: int | None = 2048,
        max_images: int = 4,
        shuffle: int = 0,
        resampled: bool = False,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 42,
        max_bad_fraction: float = 0.01,
        image_token: str = IMAGE_TOKEN,
    ):
        self.urls = _expand(urls)
        if not self.urls:
            raise DataError([f"{urls}: no shards found"])
        self.processor = SampleProcessor(
            tokenizer, image_processor, vision_tokens_for, template, max_length, max_images, image_token
        )
        self.shuffle, self.resampled = shuffle, resampled
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.max_bad_fraction = max_bad_fraction
        self.epoch = 0
        self.num_seen = 0
        self.bad_counts: Counter = Counter()

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the shard and sample order (call before iterating each epoch)."""
        self.epoch = int(epoch)

    def _shards(self, rng: random.Random):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        if self.resampled:
            while True:
                yield rng.choice(self.urls)
        urls = list(self.urls)
        if self.shuffle:  # the same shard order on every rank and worker, so the split is a partition
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(urls)
        yield from islice(islice(urls, self.rank, None, self.world_size), wid, None, nw)

    def _samples(self, rng):
        for url in self._shards(rng):
            yield from wds.tarfile_to_samples()([{"url": url}])

    def _item(self, sample: dict):
        meta = json.loads(sample["json"])
        ref = SampleRef(
            record=meta["record"],
            source=meta["source"],
            index=meta["index"],
            images=meta["images"],
            image_is_list=meta["image_is_list"],
            template=meta.get("template"),
        )
        self.num_seen += 1
        try:
            return self.processor(ref, [sample[name] for name in meta["images"]])
        except (BadSample, KeyError) as e:
            logger.warning("skipping %s (shard %s): %s", ref.where(), sample.get("__url__"), e)
            self.bad_counts[str(e).split(" (")[0][:60]] += 1
            bad = sum(self.bad_counts.values())
            if self.num_seen >= 100 and bad / self.num_seen > self.max_bad_fraction:
                raise DataError(
                    [f"{bad} of {self.num_seen} shard samples are bad (> {self.max_bad_fraction:.2%})"]
                ) from None
            return None

    def __iter__(self):
        info = get_worker_info()
        rng = random.Random(
            (self.seed * 1_000_003 + self.epoch) * 1009 + self.rank * 31 + (info.id if info else 0)
        )
        buf = []
        for sample in self._samples(rng):
            item = self._item(sample)
            if item is None:
                continue
            if not self.shuffle:
                yield item
                continue
            buf.append(item)
            if len(buf) >= self.shuffle:
                k = rng.randrange(len(buf))
                buf[k], buf[-1] = buf[-1], buf[k]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf


__all__ = ["write_shards", "ShardDataset", "parse_size"]
