"""One mixture source on one (rank, worker): its shard order per epoch, read position and shuffle buffer
(`SourceReader`), and the bad-sample / shard-error bookkeeping of a worker (`StreamLog`)."""

from __future__ import annotations

import logging
import random
from collections import Counter

from .shard_reader import iter_shard, split_shards, uniform
from .stream_mixture import StreamMixture, StreamSource

logger = logging.getLogger("xgenmm_data")
MAX_EXAMPLES = 50  # bad-sample examples / shard errors kept per worker


class SourceReader:
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
        """This worker's shard list of `epoch` (the source's list shuffled per epoch, then split)."""
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
                    uniform(self.seed, self.split[0], self.split[2], self.name, self.draws) * len(self.buffer)
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
        """The read position and buffer as plain JSON (buffer entries as [shard, index, byte])."""
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
        """Set the position from `state()`; `fetched`: {(source, epoch, shard, index): (key, parts)} re-read."""
        for k in ("epoch", "shard", "offset", "byte", "draws", "read", "finished"):
            setattr(self, k, state[k])
        self.buffer = [(s, i, *fetched[(self.name, self.epoch, s, i)], b) for s, i, b in state["buffer"]]
        self._iter = None


class StreamLog:
    """A worker's count of samples read, bad samples by reason (+ the last examples) and unreadable shards."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.bad = Counter(state.get("bad", {}))
        self.examples = list(state.get("bad_examples", []))
        self.shard_errors = list(state.get("shard_errors", []))
        self.samples = state.get("samples", 0)

    def bad_sample(self, source, url, key, reason):
        """Log and count a skipped sample (the reason's head is the counter key)."""
        logger.warning("skipping %s sample %s in shard %s: %s", source, key, url, reason)
        self.bad[reason.split(" (")[0].split(":")[0][:60]] += 1
        self.examples = (self.examples + [[source, url, key, reason]])[-MAX_EXAMPLES:]

    def shard_error(self, url, reason):
        """Log and count a shard that cannot be opened or read."""
        logger.error("cannot read shard %s: %s", url, reason)
        self.shard_errors = (self.shard_errors + [[url, reason]])[-MAX_EXAMPLES:]
        self.bad["unreadable shard"] += 1

    def state(self) -> dict:
        """The counts as plain JSON (restored by `StreamLog(state)`)."""
        return {
            "samples": self.samples,
            "bad": dict(self.bad),
            "bad_examples": [list(e) for e in self.examples],
            "shard_errors": [list(e) for e in self.shard_errors],
        }


__all__ = ["SourceReader", "StreamLog"]
