"""Streamed pre-training data: a weighted mixture of webdataset shard streams, split over ranks and DataLoader
workers, with an exactly resumable position.

    mixture (YAML)  ->  per source: shard list  ->  split by rank, then worker  ->  shuffle buffer
                    ->  weighted choice of a source  ->  parse (caption / interleaved)  ->  processor  ->  batcher

* Shards: every epoch of a source shuffles its shard list with the same seed on every rank and worker, then
  rank r takes shards r, r+W, ... and its worker w every N-th of those (`webdataset.split_by_node`, then
  `split_by_worker`), so across all ranks and workers every shard is read exactly once per source epoch.
  Each source runs its own epochs (its weight holds at all times); `epochs: N` stops a source after N passes
  and the stream after all have stopped, `null` streams forever.
* Shuffle: per source and worker a buffer of `shuffle` raw samples (webdataset-style: a random one of the
  buffer is taken and replaced by the next sample read); a source's buffer is drained at the end of each of
  its epochs, so no sample of epoch e+1 comes before every sample of epoch e was drawn.
* Randomness is counter-based (a hash of seed, rank, worker, source and a draw counter), so the position is a
  handful of counters: per source (epoch, shard, offset, draws) plus the buffer and the batcher's pool as
  references `[shard, index]` into the shard lists. `state_dict()` is plain JSON; a stream restored with
  `load_state_dict` re-reads only the buffered / pooled samples (which were read but not yet yielded), skips
  the consumed part of the current shard without reading its members, and then yields exactly what the
  uninterrupted stream would have yielded.
* Bad members (unreadable image, empty caption, missing pair, bad json) are skipped, logged with source, shard
  and key, and counted; a shard that cannot be opened or read is logged by name and the stream goes on with
  the next shard.

With DataLoader workers every yielded element carries its worker's state under `"stream_state"`; pass each
consumed element to `stream.record(batch)` (it pops that key) and `stream.state_dict()` then describes the
position after the last consumed element (prefetched ones are not counted). Without workers this is automatic.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import random
import tarfile
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import webdataset as wds
from omegaconf import OmegaConf
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import base_plus_ext

from .batchers import Batched, first_item
from .processing import BadSample
from .shards import _expand
from .sources import DataError
from .tokenization import IMAGE_TOKEN
from .webformats import parse_sample

logger = logging.getLogger("xgenmm_data")
STATE_VERSION = 1
_MAX_EXAMPLES = 50


def _group(members, read, first: int, start: int, stop, only):
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


def _members_from(tar: tarfile.TarFile, byte: int):
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
            yield from _group(members, read, 0, start, stop, only)
            return
        wanted = sorted(only) if only is not None else [start]
        done = start - 1
        for w in wanted:
            if w <= done or w < start or (stop is not None and w >= stop):
                continue
            begin = w if w in at else max((i for i in at if i <= w), default=None)  # nearest known start
            first, byte = (begin, at[begin]) if begin is not None else (0, 0)
            sub = {w} if only is not None else None
            for sample in _group(
                _members_from(tar, byte), read, first, w, stop if sub is None else w + 1, sub
            ):
                done = sample[0]
                yield sample
    finally:
        stream.close()


def split_shards(urls: list[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards of (rank, worker): `urls[rank::world_size][worker::num_workers]`, i.e. webdataset's
    `split_by_node` followed by `split_by_worker`."""
    return list(islice(islice(urls, rank, None, world_size), worker, None, num_workers))


def _uniform(*key) -> float:
    """A deterministic float in [0, 1) from the key (counter-based randomness: no RNG state to save)."""
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


# -- the mixture ------------------------------------------------------------------------------------------


@dataclass
class StreamSource:
    """One stream of the mixture: `urls` (expanded shard list), `weight`, `kind` ("caption", "interleaved" or
    "auto": decided per sample) and `shuffle` (buffer size; None = the mixture's)."""

    name: str
    urls: list[str]
    weight: float = 1.0
    kind: str = "auto"
    shuffle: int | None = None


def _resolve(entry, base: Path | None) -> list[str]:
    entry = str(entry)
    if base is not None and "://" not in entry and not entry.startswith(("pipe:", "file:")):
        if not os.path.isabs(entry):
            entry = str(base / entry)
    return _expand(entry)


@dataclass
class StreamMixture:
    """Weighted shard streams (see `from_config` for the YAML). `shuffle`: default buffer size per source and
    worker; `seed`: shard order and draws; `epochs`: passes per source (None = stream forever)."""

    sources: list[StreamSource]
    shuffle: int = 1000
    seed: int = 42
    epochs: int | None = None

    @classmethod
    def from_config(cls, cfg: dict, base_dir=None) -> StreamMixture:
        """`cfg`::

            seed: 42             # optional
            shuffle: 1000        # optional, samples per source buffer
            epochs: null         # optional, passes per source; null = forever
            streams:
              captions: {urls: caps/shard-{000000..000009}.tar, weight: 0.6, kind: caption}
              docs: {urls: [docs/a.tar, docs/b.tar], weight: 0.4, kind: interleaved, shuffle: 200}
              more: extra/               # a folder (its *.tar) or a pattern alone: weight 1

        Relative paths are relative to `base_dir` (the YAML's folder); URLs and `pipe:` commands are kept."""
        base = Path(base_dir) if base_dir is not None else None
        streams = cfg.get("streams")
        problems = [f"unknown key {k!r}" for k in cfg if k not in ("seed", "shuffle", "epochs", "streams")]
        if isinstance(streams, dict):
            streams = [
                dict(spec, name=n) if isinstance(spec, dict) else {"name": n, "urls": spec}
                for n, spec in streams.items()
            ]
        if not isinstance(streams, list) or not streams:
            raise DataError(problems + ["'streams' must be a non-empty mapping name -> {urls, weight, kind}"])
        sources = []
        for k, spec in enumerate(streams):
            name = str(spec.get("name", f"stream{k}"))
            bad = [key for key in spec if key not in ("name", "urls", "weight", "kind", "shuffle")]
            problems += [f"stream {name}: unknown key {key!r}" for key in bad]
            urls = spec.get("urls")
            entries = urls if isinstance(urls, list) else [urls] if urls else []
            expanded = [u for e in entries for u in _resolve(e, base)]
            if not expanded:
                problems.append(f"stream {name}: no shards in urls={urls!r}")
            weight = float(spec.get("weight", 1.0))
            if weight <= 0:
                problems.append(f"stream {name}: weight must be > 0 (got {weight})")
            kind = spec.get("kind", "auto")
            if kind not in ("auto", "caption", "interleaved"):
                problems.append(f"stream {name}: kind must be caption, interleaved or auto (got {kind!r})")
            sources.append(StreamSource(name, expanded, weight, kind, spec.get("shuffle")))
        if len({s.name for s in sources}) != len(sources):
            problems.append("stream names must be unique")
        if problems:
            raise DataError(problems)
        epochs = cfg.get("epochs")
        return cls(sources, int(cfg.get("shuffle", 1000)), int(cfg.get("seed", 42)), epochs and int(epochs))

    @classmethod
    def from_yaml(cls, path) -> StreamMixture:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        return cls.from_config(cfg, base_dir=Path(path).parent)

    @classmethod
    def from_any(cls, spec) -> StreamMixture:
        """A StreamMixture, a config dict, a YAML path, or shard urls (folder / pattern / list) as one stream."""
        if isinstance(spec, StreamMixture):
            return spec
        if isinstance(spec, dict):
            return cls.from_config(spec)
        if isinstance(spec, (str, os.PathLike)) and str(spec).endswith((".yaml", ".yml")):
            return cls.from_yaml(spec)
        return cls.from_config(
            {"streams": {"shards": {"urls": spec if isinstance(spec, list) else str(spec)}}}
        )


# -- one source on one worker -----------------------------------------------------------------------------


class _SourceReader:
    """One source on one (rank, worker): its shard list per epoch, the read position and the shuffle buffer.
    Buffer entries are (shard, index, key, parts, byte), shard = position in this worker's list of the epoch,
    byte = where the sample starts in the tar; `byte` of the reader = where sample `offset` starts."""

    def __init__(
        self, source: StreamSource, mixture: StreamMixture, rank, world_size, worker, num_workers, log
    ):
        self.source, self.name = source, source.name
        self.size = max(1, source.shuffle if source.shuffle is not None else mixture.shuffle)
        self.seed, self.epochs = mixture.seed, mixture.epochs
        self.split = (rank, world_size, worker, num_workers)
        self.log = log
        self.epoch = self.shard = self.offset = self.byte = self.draws = self.read = 0
        self.finished = False
        self.buffer: list = []
        self._iter = None
        self._lists: dict[int, list[str]] = {}
        if not self.shards(0):
            logger.warning(
                "stream %s: %d shard(s) < ranks x workers; rank %d worker %d reads none of it",
                self.name,
                len(source.urls),
                rank,
                worker,
            )
            self.finished = True

    def shards(self, epoch: int) -> list[str]:
        if epoch not in self._lists:
            urls = list(self.source.urls)
            if self.size > 1:  # the same order on every rank and worker, so the split is a partition
                random.Random(f"{self.seed}/{self.name}/{epoch}").shuffle(urls)
            self._lists = {epoch: split_shards(urls, *self.split)}
        return self._lists[epoch]

    def _read(self):
        """The next sample in shard order, or None at the end of this epoch's shards."""
        shards = self.shards(self.epoch)
        while self.shard < len(shards):
            url = shards[self.shard]
            try:
                if self._iter is None:
                    self._iter = iter_shard(url, start=self.offset, at={self.offset: self.byte})
                index, key, parts, begin, end = next(self._iter)
            except StopIteration:
                index = None
            except Exception as e:  # cannot open / truncated / not a tar: report the shard, go on
                self.log.shard_error(url, f"{type(e).__name__}: {e} (after {self.offset} sample(s))")
                index = None
            if index is None:
                self._iter, self.shard, self.offset, self.byte = None, self.shard + 1, 0, 0
                continue
            self.offset, self.byte = index + 1, end
            return self.shard, index, key, parts, begin
        return None

    def next(self):
        """The next raw sample (shard, index, key, parts, byte) of this source, or None once it has finished."""
        while not self.finished:
            while len(self.buffer) < self.size:
                raw = self._read()
                if raw is None:
                    break
                self.buffer.append(raw)
                self.read += 1
            if self.buffer:
                k = int(
                    _uniform(self.seed, self.split[0], self.split[2], self.name, self.draws)
                    * len(self.buffer)
                )
                self.draws += 1
                self.buffer[k], self.buffer[-1] = self.buffer[-1], self.buffer[k]
                return self.buffer.pop()
            if not self.read:
                logger.error(
                    "stream %s: epoch %d gave no samples on this worker; stopping it", self.name, self.epoch
                )
                self.finished = True
                break
            self.epoch, self.shard, self.offset, self.byte, self.read = self.epoch + 1, 0, 0, 0, 0
            self.finished = self.epochs is not None and self.epoch >= self.epochs
        return None

    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "shard": self.shard,
            "offset": self.offset,
            "byte": self.byte,
            "draws": self.draws,
            "read": self.read,
            "finished": self.finished,
            "buffer": [[s, i, b] for s, i, _, _, b in self.buffer],
        }

    def restore(self, state: dict, fetched: dict) -> None:
        for k in ("epoch", "shard", "offset", "byte", "draws", "read", "finished"):
            setattr(self, k, state[k])
        self.buffer = [(s, i, *fetched[(self.name, self.epoch, s, i)], b) for s, i, b in state["buffer"]]
        self._iter = None


# -- bad-sample / shard-error bookkeeping -----------------------------------------------------------------


class _Log:
    def __init__(self, state: dict | None = None):
        state = state or {}
        self.bad = Counter(state.get("bad", {}))
        self.examples = list(state.get("bad_examples", []))
        self.shard_errors = list(state.get("shard_errors", []))
        self.samples = state.get("samples", 0)

    def bad_sample(self, source, url, key, reason):
        logger.warning("skipping %s sample %s in shard %s: %s", source, key, url, reason)
        self.bad[reason.split(" (")[0].split(":")[0][:60]] += 1
        self.examples = (self.examples + [[source, url, key, reason]])[-_MAX_EXAMPLES:]

    def shard_error(self, url, reason):
        logger.error("cannot read shard %s: %s", url, reason)
        self.shard_errors = (self.shard_errors + [[url, reason]])[-_MAX_EXAMPLES:]
        self.bad["unreadable shard"] += 1

    def state(self) -> dict:
        return {
            "samples": self.samples,
            "bad": dict(self.bad),
            "bad_examples": [list(e) for e in self.examples],
            "shard_errors": [list(e) for e in self.shard_errors],
        }


# -- the stream -------------------------------------------------------------------------------------------


class ShardStream(IterableDataset):
    """Iterable over a `StreamMixture` (or a YAML path / dict / shard urls), split over ranks and workers.

    Args:
        mixture: `StreamMixture`, a mixture YAML path, a config dict, or shards (folder / pattern / list).
        processor: callable sample -> item (e.g. `PretrainProcessor`); a `BadSample` it raises skips the
            sample (counted). None: elements are the parsed samples
            `{"kind", "text", "images": [bytes], "source", "url", "key"}`.
        batcher: how items become elements: `Batched(n, collate_fn)` or `PackedRows(...)`; None = one item
            per element.
        rank, world_size: default: webdataset's `pytorch_worker_info()` (RANK / WORLD_SIZE or
            torch.distributed).
        max_bad_fraction: raise `DataError` once more than this fraction of the samples read was bad (after
            100 samples); None = never (bad samples are still logged and counted, see `report()`).
    """

    def __init__(
        self,
        mixture,
        processor=None,
        batcher=None,
        rank: int | None = None,
        world_size: int | None = None,
        max_bad_fraction: float | None = None,
        image_token: str = IMAGE_TOKEN,
    ):
        self.mixture = StreamMixture.from_any(mixture)
        self.processor, self.batcher = processor, batcher or Batched(1, first_item)
        self.rank, self.world_size = rank, world_size
        self.max_bad_fraction, self.image_token = max_bad_fraction, image_token
        self._resume: dict | None = None
        self._states: dict[int, dict] = {}
        self._num_workers: int | None = None
        self._next_worker = 0

    def _rank_world(self) -> tuple[int, int]:
        rank, world, _, _ = wds.utils.pytorch_worker_info()
        rank = rank if self.rank is None else self.rank
        world = world if self.world_size is None else self.world_size
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} not in [0, {world})")
        return rank, world

    # -- position -----------------------------------------------------------------------------------------

    def record(self, element) -> None:
        """Note that `element` was consumed: pops its `"stream_state"` (no-op without one)."""
        state = element.pop("stream_state", None) if isinstance(element, dict) else None
        if state is not None:
            self._num_workers = state["num_workers"]
            self._states[state["worker"]] = state
            self._next_worker = (state["worker"] + 1) % state["num_workers"]

    def state_dict(self) -> dict:
        """The position after the last consumed element, per DataLoader worker: plain JSON."""
        rank, world = self._rank_world()
        n = self._num_workers
        return {
            "version": STATE_VERSION,
            "rank": rank,
            "world_size": world,
            "seed": self.mixture.seed,
            "sources": [s.name for s in self.mixture.sources],
            "num_workers": n,
            "next_worker": self._next_worker,
            "workers": [self._states.get(w) for w in range(n)] if n else [],
        }

    def load_state_dict(self, state: dict) -> None:
        """Start the next iteration where `state` (from `state_dict`) stands. The DataLoader must have the same
        number of workers, the same rank / world size, seed and stream names."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"stream state version {state.get('version')} != {STATE_VERSION}")
        rank, world = self._rank_world()
        names = [s.name for s in self.mixture.sources]
        mine = {"rank": rank, "world_size": world, "seed": self.mixture.seed, "sources": names}
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            raise ValueError(f"stream state was saved with other settings (saved, now): {diff}")
        self._resume = copy.deepcopy(state) if state.get("num_workers") else None
        self._num_workers = state.get("num_workers")
        self._next_worker = state.get("next_worker", 0)
        self._states = {w: s for w, s in enumerate(state.get("workers", [])) if s is not None}

    def report(self) -> dict:
        """Samples read, bad samples by reason (+ the last examples: source, shard, key, reason) and shard errors,
        summed over the workers' recorded states."""
        out = {"samples": 0, "bad": Counter(), "bad_examples": [], "shard_errors": []}
        for s in self._states.values():
            out["samples"] += s["log"]["samples"]
            out["bad"].update(s["log"]["bad"])
            out["bad_examples"] += s["log"]["bad_examples"]
            out["shard_errors"] += s["log"]["shard_errors"]
        out["bad"] = dict(out["bad"])
        return out

    # -- iteration ----------------------------------------------------------------------------------------

    def __iter__(self):
        info = get_worker_info()
        real, n = (info.id, info.num_workers) if info else (0, 1)
        rank, world = self._rank_world()
        resume = self._resume
        if resume is not None and resume["num_workers"] != n:
            raise ValueError(
                f"stream state has {resume['num_workers']} DataLoader worker(s), this loader {n}"
            )
        # the loader reads its workers round-robin from worker 0: worker j plays saved worker (j + next) % n
        worker = (real + (resume["next_worker"] if resume else 0)) % n
        state = resume["workers"][worker] if resume else None
        source = _WorkerStream(self, rank, world, worker, n, state)
        for element in source.run():
            if info is None:
                self.record(element)
            yield element
        if info is None:  # in-process the end state is known too (bad samples after the last element)
            self.record({"stream_state": source.state()})


class _WorkerStream:
    def __init__(self, stream: ShardStream, rank, world_size, worker, num_workers, state):
        self.stream, self.mixture = stream, stream.mixture
        self.ids = {"rank": rank, "world_size": world_size, "worker": worker, "num_workers": num_workers}
        self.log = _Log(state and state["log"])
        self.readers = [
            _SourceReader(s, self.mixture, rank, world_size, worker, num_workers, self.log)
            for s in self.mixture.sources
        ]
        self.batcher = copy.copy(stream.batcher)
        self.batcher.pool = []
        self.draws = 0
        if state is not None:
            self._restore(state)

    def _restore(self, state: dict) -> None:
        by_name = {r.name: r for r in self.readers}
        refs = [tuple(ref) for ref in state["pending"]]  # (source, epoch, shard, index, byte)
        for name, s in state["sources"].items():
            refs += [(name, s["epoch"], *ref) for ref in s["buffer"]]
        fetched = self._fetch(refs, by_name)
        for name, s in state["sources"].items():
            by_name[name].restore(s, fetched)
        for ref in state["pending"]:
            key, parts = fetched[tuple(ref[:4])]
            url = by_name[ref[0]].shards(ref[1])[ref[2]]
            item = self._process(by_name[ref[0]], url, key, parts, count=False)
            if item is None:
                raise DataError([f"cannot resume: sample {key} of {url} no longer processes"])
            self.batcher.pool.append((list(ref), item))
        self.draws = state["draws"]

    def _fetch(self, refs, by_name) -> dict:
        """Re-read the samples `refs` = (source, epoch, shard, index, byte) -> {ref[:4]: (key, parts)}."""
        groups: dict = {}
        for name, epoch, shard, index, byte in refs:
            groups.setdefault((name, epoch, shard), {})[index] = byte
        out = {}
        for (name, epoch, shard), at in groups.items():
            url = by_name[name].shards(epoch)[shard]
            try:
                for index, key, parts, _, _ in iter_shard(url, min(at), max(at) + 1, only=set(at), at=at):
                    out[(name, epoch, shard, index)] = (key, parts)
            except Exception as e:
                raise DataError(
                    [f"cannot resume: shard {url} is unreadable ({type(e).__name__}: {e})"]
                ) from None
            missing = sorted(i for i in at if (name, epoch, shard, i) not in out)
            if missing:
                raise DataError([f"cannot resume: shard {url} has no sample(s) {missing[:5]} any more"])
        return out

    def _process(self, reader: _SourceReader, url, key, parts, count=True):
        try:
            kind, text, images = parse_sample(parts, reader.source.kind, self.stream.image_token)
            sample = {
                "kind": kind,
                "text": text,
                "images": images,
                "source": reader.name,
                "url": url,
                "key": key,
            }
            return self.stream.processor(sample) if self.stream.processor else sample
        except BadSample as e:
            if count:
                self.log.bad_sample(reader.name, url, key, str(e))
            return None

    def _choose(self, active):
        total = sum(r.source.weight for r in active)
        u = _uniform(self.mixture.seed, self.ids["rank"], self.ids["worker"], "mix", self.draws) * total
        self.draws += 1
        for r in active:
            u -= r.source.weight
            if u < 0:
                return r
        return active[-1]

    def state(self) -> dict:
        return {
            "version": STATE_VERSION,
            **self.ids,
            "draws": self.draws,
            "sources": {r.name: r.state() for r in self.readers},
            "pending": [list(ref) for ref, _ in self.batcher.pool],
            "log": self.log.state(),
        }

    def _emit(self, element):
        element["stream_state"] = self.state()
        return element

    def _check_bad_fraction(self):
        limit, n = self.stream.max_bad_fraction, self.log.samples
        bad = sum(self.log.bad.values())
        if limit is not None and n >= 100 and bad / n > limit:
            raise DataError([f"{bad} of {n} stream samples are bad (> {limit:.2%}): {dict(self.log.bad)}"])

    def run(self):
        while True:
            active = [r for r in self.readers if not r.finished]
            if not active:
                break
            reader = self._choose(active)
            raw = reader.next()
            if raw is None:
                continue
            shard, index, key, parts, byte = raw
            self.log.samples += 1
            url = reader.shards(reader.epoch)[shard]
            item = self._process(reader, url, key, parts)
            if item is None:
                self._check_bad_fraction()
                continue
            self.batcher.pool.append(([reader.name, reader.epoch, shard, index, byte], item))
            while self.batcher.ready():
                yield self._emit(self.batcher.pop())
        while self.batcher.pool:
            yield self._emit(self.batcher.pop())
        bad = sum(self.log.bad.values())
        if bad:
            logger.warning(
                "stream rank %d worker %d: %d sample(s) read, %d bad: %s; %d shard error(s)",
                self.ids["rank"],
                self.ids["worker"],
                self.log.samples,
                bad,
                dict(self.log.bad),
                len(self.log.shard_errors),
            )
        if not self.log.samples and self.log.shard_errors:
            raise DataError([f"no sample could be read; shard errors: {self.log.shard_errors[:10]}"])


__all__ = [
    "ShardStream",
    "StreamMixture",
    "StreamSource",
    "iter_shard",
    "split_shards",
]
