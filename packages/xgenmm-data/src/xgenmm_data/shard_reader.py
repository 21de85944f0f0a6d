"""Reading webdataset shards sample by sample with a resumable byte position, and splitting a shard list over
ranks and DataLoader workers (the low level of `stream.ShardStream`)."""

from __future__ import annotations

import hashlib
import os
import tarfile
from itertools import islice

import webdataset as wds
from webdataset.tariterators import base_plus_ext


def group_members(members, read, first: int, start: int, stop, only):
    """Group tar members by key (webdataset's `base_plus_ext`) -> (index, key, parts, start_byte, end_byte);
    `first`: index of the first sample the members begin with. `__*` metadata members are ignored."""
    index, key, parts, begin, end, wanted = first - 1, None, {}, 0, 0, False
    for member in members:
        if not member.isreg() or os.path.basename(member.name).startswith("__"):
            continue
        prefix, ext = base_plus_ext(member.name)
        if prefix is None:
            continue
        if prefix != key:
            if key is not None and wanted:
                yield index, key, parts, begin, end
            index, key, parts, begin = index + 1, prefix, {}, member.offset
            if stop is not None and index >= stop:
                return
            wanted = index >= start and (only is None or index in only)
        if wanted:
            parts[ext.lower()] = read(member)
        end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    if key is not None and wanted:
        yield index, key, parts, begin, end


def members_from(tar: tarfile.TarFile, byte: int):
    """The members of a seekable tar from the header at `byte` on (`TarInfo.fromtarfile`)."""
    while True:
        tar.fileobj.seek(byte)
        try:
            member = tarfile.TarInfo.fromtarfile(tar)
        except (tarfile.EOFHeaderError, tarfile.EmptyHeaderError):
            return
        yield member
        byte = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def iter_shard(url: str, start: int = 0, stop: int | None = None, only=None, at: dict | None = None):
    """Yield `(index, key, parts, start_byte, end_byte)` for the samples of one shard in tar order (`parts`:
    {extension: bytes}, e.g. {"jpg": ..., "txt": ...}; the bytes: where the sample's members begin and end in
    the tar), from sample `start` up to `stop` (exclusive), only the indices in `only` if given. Members are
    grouped by key like webdataset (`base_plus_ext`); `__*` metadata members are ignored.

    Skipped samples are not read. `at` = {index: start_byte} of samples seen before: in a local file the reader
    jumps straight to them (resume); `pipe:` / http streams are read past instead. `url`: a path or a `file:`,
    `pipe:`, http(s) URL (webdataset's `gopen`). Open / read errors propagate (the stream reports the shard)."""
    stream = wds.gopen(str(url), "rb")
    try:
        seekable = getattr(stream, "seekable", lambda: False)()
        tar = tarfile.open(fileobj=stream, mode="r:*" if seekable else "r|*")

        def read(member):
            return tar.extractfile(member).read()

        if not (seekable and at):
            members = (m for m in tar if not setattr(tar, "members", []))  # tarfile would keep every TarInfo
            yield from group_members(members, read, 0, start, stop, only)
            return
        wanted = sorted(only) if only is not None else [start]
        done = start - 1
        for w in wanted:
            if w <= done or w < start or (stop is not None and w >= stop):
                continue
            begin = w if w in at else max((i for i in at if i <= w), default=None)  # nearest known start
            first, byte = (begin, at[begin]) if begin is not None else (0, 0)
            sub = {w} if only is not None else None
            for sample in group_members(
                members_from(tar, byte), read, first, w, stop if sub is None else w + 1, sub
            ):
                done = sample[0]
                yield sample
    finally:
        stream.close()


def split_shards(urls: list[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards of (rank, worker): `urls[rank::world_size][worker::num_workers]`, i.e. webdataset's
    `split_by_node` followed by `split_by_worker`."""
    return list(islice(islice(urls, rank, None, world_size), worker, None, num_workers))


def uniform(*key) -> float:
    """A deterministic float in [0, 1) from the key (counter-based randomness: no RNG state to save)."""
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


__all__ = ["group_members", "iter_shard", "members_from", "split_shards", "uniform"]
