"""Distributed-exact batch samplers with real token lengths: length grouping, token budgets and packing.

Both samplers are *batch* samplers (`DataLoader(dataset, batch_sampler=s, collate_fn=DataCollator(...))`)
and build the whole epoch's plan from `(seed, epoch)` with a private `random.Random`; no global RNG is read
or reseeded (the reference reseeds torch's global RNG and lets ranks disagree: LAVIS
`sft_data_utils.LengthGroupedSampler` shuffles with the rank-seeded global RNG).

A plan is a list of global steps; step s holds `world_size` per-rank batches and rank r takes the r-th.
Across the ranks every index appears exactly once per epoch; the tail that does not fill a last step is
handled explicitly: `drop_last=True` drops it (`num_dropped`), otherwise it is split evenly over the ranks,
padded with repeated samples to a multiple of world_size (`num_padded`).

Resume: `state_dict()` / `load_state_dict()` (or `skip_to(epoch, batch)`) restart at batch k of an epoch
without reading any skipped sample. With DataLoader prefetching the sampler runs ahead of the trainer, so
save the number of batches the trainer consumed: `sampler.state_dict(consumed=k)`.
"""

from __future__ import annotations

import bisect
import random


def padding_efficiency(batches, lengths) -> float:
    """Real tokens / processed tokens. `batches`: lists of indices (one row each) or lists of rows (lists of
    indices, packed). A batch processes rows × its longest row."""
    real = processed = 0
    for batch in batches:
        rows = [r if isinstance(r, list) else [r] for r in batch]
        row_lens = [sum(abs(lengths[i]) for i in r) for r in rows]
        real += sum(row_lens)
        processed += len(rows) * max(row_lens, default=0)
    return real / processed if processed else 1.0


class _Plan:
    """Shared epoch / rank / resume logic. Subclasses implement `_steps(rng) -> (steps, last_steps, tail)`:
    each step is a list of `world_size` batches; `steps` are shuffled, `last_steps` (built from leftovers)
    follow them, and `tail` is the list of leftover units (indices or rows) that fill no step."""

    def __init__(self, world_size: int = 1, rank: int = 0, seed: int = 42, drop_last: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.world_size, self.rank, self.seed, self.drop_last = world_size, rank, seed, drop_last
        self.epoch = 0
        self._start = 0
        self._yielded = 0
        self.num_padded = self.num_dropped = 0

    def _rng(self, epoch: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + epoch)

    def plan(self, epoch: int | None = None) -> list[list]:
        """All global steps of `epoch`: a list of steps, each a list of world_size batches."""
        epoch = self.epoch if epoch is None else epoch
        rng = self._rng(epoch)
        steps, last_steps, tail = self._steps(rng)
        order = list(range(len(steps)))
        rng.shuffle(order)
        steps = [steps[i] for i in order] + last_steps
        W = self.world_size
        self.num_padded = self.num_dropped = 0
        if tail and self.drop_last:
            self.num_dropped = len(tail)
        elif tail:
            pad = (-len(tail)) % W
            fill = [u for step in steps for b in step for u in b] or tail
            tail = tail + [fill[k % len(fill)] for k in range(pad)]
            self.num_padded = pad
            steps.append([tail[r::W] for r in range(W)])
        return steps

    def batches(self, epoch: int | None = None) -> list[list]:
        """This rank's batches for `epoch`, in order."""
        return [step[self.rank] for step in self.plan(epoch)]

    def __iter__(self):
        batches = self.batches()
        start, self._start = self._start, 0
        self._yielded = start
        for b in batches[start:]:
            self._yielded += 1
            yield b

    def __len__(self) -> int:
        return len(self.batches())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_to(self, epoch: int, batch: int) -> None:
        """The next iteration runs epoch `epoch` starting at its batch `batch` (0-based)."""
        self.epoch, self._start = int(epoch), int(batch)

    def state_dict(self, consumed: int | None = None) -> dict:
        return {
            "epoch": self.epoch,
            "batch": self._yielded if consumed is None else int(consumed),
            "seed": self.seed,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        if (
            state.get("seed", self.seed) != self.seed
            or state.get("world_size", self.world_size) != self.world_size
        ):
            raise ValueError(f"sampler state {state} was saved with another seed / world_size")
        self.skip_to(state["epoch"], state["batch"])


class LengthGroupedSampler(_Plan):
    """Batches of similar token length, optionally one modality per step (the original's
    `LengthGroupedSampler`, with real lengths).

    Per epoch: indices are split by modality (text-only vs. with images, when `group_by_modality`), shuffled,
    cut into megabatches of `megabatch_steps` global steps, each sorted by length (longest first) and cut into
    steps; a step's samples go to ranks round-robin (`step[r::world_size]`) so ranks get similar lengths.
    Steps are then shuffled. Leftovers of every group are pooled, sorted and cut into steps that come last
    (they may mix modalities), then the remaining tail (see module docstring).

    Args:
        lengths: token length per dataset index (`SupervisedDataset.lengths`); negative = text-only (the
            reference's modality-length convention) unless `modalities` is given.
        batch_size: samples per rank batch; or give `max_tokens_per_batch` for a token budget instead
            (per-rank batch size = budget // longest sample of the batch, at least 1).
        modalities: optional per-index group key (e.g. `SupervisedDataset.has_image`).
    """

    def __init__(
        self,
        lengths,
        batch_size: int | None = None,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 42,
        group_by_modality: bool = True,
        modalities=None,
        megabatch_steps: int = 8,
        max_tokens_per_batch: int | None = None,
        drop_last: bool = False,
    ):
        super().__init__(world_size, rank, seed, drop_last)
        if (batch_size is None) == (max_tokens_per_batch is None):
            raise ValueError("give exactly one of batch_size / max_tokens_per_batch")
        self.lengths = [abs(int(n)) for n in lengths]
        if modalities is None:
            modalities = [n >= 0 for n in lengths]
        self.modalities = list(modalities) if group_by_modality else [0] * len(self.lengths)
        self.batch_size, self.max_tokens_per_batch = batch_size, max_tokens_per_batch
        self.megabatch_steps = megabatch_steps

    def _per_rank(self, longest: int) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return max(1, self.max_tokens_per_batch // max(longest, 1))

    def _cut(self, idx):
        """Sorted (longest first) indices -> (steps, leftover)."""
        W, steps, i = self.world_size, [], 0
        while i < len(idx):
            n = W * self._per_rank(self.lengths[idx[i]])
            if i + n > len(idx):
                break
            chunk = idx[i : i + n]
            steps.append([chunk[r::W] for r in range(W)])
            i += n
        return steps, idx[i:]

    def _steps(self, rng):
        groups: dict = {}
        for i, m in enumerate(self.modalities):
            groups.setdefault(m, []).append(i)
        steps, tail = [], []
        mega = self.world_size * (self.batch_size or 1) * self.megabatch_steps
        for key in sorted(groups, key=str):
            idx = groups[key]
            rng.shuffle(idx)
            if self.max_tokens_per_batch is not None:
                mega = max(mega, self.world_size * self.megabatch_steps * 8)
            for s in range(0, len(idx), mega):
                chunk = sorted(idx[s : s + mega], key=lambda i: -self.lengths[i])
                new, left = self._cut(chunk)
                steps += new
                tail += left
        tail.sort(key=lambda i: -self.lengths[i])
        new, tail = self._cut(tail)
        return steps, new, tail


def pack_best_fit_decreasing(indices, lengths, capacity: int) -> list[list[int]]:
    """Pack indices into rows of at most `capacity` tokens: longest sample first, each into the row with the
    least room that still fits it (best-fit decreasing, O(n log n) with a sorted free-room list). A sample
    longer than the capacity gets a row of its own. Rows list their samples longest first."""
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (room left, row id)
    for i in sorted(indices, key=lambda i: -lengths[i]):
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            room, r = free.pop(k)
            rows[r].append(i)
            bisect.insort(free, (room - n, r))
        else:
            rows.append([i])
            if capacity - n > 0:
                bisect.insort(free, (capacity - n, len(rows) - 1))
    return rows


class PackedBatchSampler(_Plan):
    """Sequence packing: rows of several samples up to `max_tokens_per_row` tokens (text + vision), and
    `rows_per_batch` rows per rank batch (or as many as fit `max_tokens_per_batch`). Yields lists of rows
    (lists of indices); `SupervisedDataset[row]` returns the row's items and `DataCollator` packs them with
    `position_ids` / `segment_ids`. No sample is ever split across rows.

    Per epoch the indices are shuffled, cut into pools of `pool_size` samples and each pool is packed
    best-fit-decreasing; rows are then grouped into steps of world_size × rows_per_batch.
    """

    def __init__(
        self,
        lengths,
        max_tokens_per_row: int,
        rows_per_batch: int | None = None,
        max_tokens_per_batch: int | None = None,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 42,
        pool_size: int = 4096,
        drop_last: bool = False,
    ):
        super().__init__(world_size, rank, seed, drop_last)
        if rows_per_batch is None:
            if max_tokens_per_batch is None:
                raise ValueError("give rows_per_batch or max_tokens_per_batch")
            rows_per_batch = max(1, max_tokens_per_batch // max_tokens_per_row)
        self.lengths = [abs(int(n)) for n in lengths]
        self.capacity, self.rows_per_batch, self.pool_size = max_tokens_per_row, rows_per_batch, pool_size
        self.num_oversize = sum(n > max_tokens_per_row for n in self.lengths)

    def _steps(self, rng):
        idx = list(range(len(self.lengths)))
        rng.shuffle(idx)
        rows = []
        for s in range(0, len(idx), self.pool_size):
            pool_rows = pack_best_fit_decreasing(idx[s : s + self.pool_size], self.lengths, self.capacity)
            rng.shuffle(pool_rows)
            rows += pool_rows
        W, R = self.world_size, self.rows_per_batch
        n_full = len(rows) // (W * R) * (W * R)
        steps = []
        for s in range(0, n_full, W * R):
            chunk = rows[s : s + W * R]
            steps.append([chunk[r * R : (r + 1) * R] for r in range(W)])
        return steps, [], rows[n_full:]


__all__ = ["LengthGroupedSampler", "PackedBatchSampler", "pack_best_fit_decreasing", "padding_efficiency"]
