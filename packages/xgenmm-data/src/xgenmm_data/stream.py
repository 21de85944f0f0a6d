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
import logging
from collections import Counter

import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from .batchers import Batched, first_item
from .processing import BadSample
from .shard_reader import iter_shard, split_shards, uniform
from .sources import DataError
from .stream_mixture import StreamMixture, StreamSource
from .stream_source import SourceReader, StreamLog
from .tokenization import IMAGE_TOKEN
from .webformats import parse_sample

logger = logging.getLogger("xgenmm_data")
STATE_VERSION = 1


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
        self.log = StreamLog(state and state["log"])
        self.readers = [
            SourceReader(s, self.mixture, rank, world_size, worker, num_workers, self.log)
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

    def _process(self, reader: SourceReader, url, key, parts, count=True):
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
        u = uniform(self.mixture.seed, self.ids["rank"], self.ids["worker"], "mix", self.draws) * total
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
