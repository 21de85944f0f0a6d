"""How a `ShardStream` turns items into the elements it yields: plain batches or packed rows.

A batcher holds `pool`, a list of `(ref, item)` in arrival order (`ref` locates the sample in the shards, so
the stream can save the pool as references and rebuild it on resume); `ready()` says an element can be made
and `pop()` makes it from the pool. Both are deterministic functions of the pool.
"""

from __future__ import annotations

from .samplers import pack_best_fit_decreasing


def first_item(items):
    """collate_fn of the default batcher: one item per element."""
    return items[0]


class Batched:
    """`batch_size` items per element, in arrival order; `collate_fn(items)` (default `{"items": items}`),
    e.g. `DataCollator(pad_id)`."""

    def __init__(self, batch_size: int = 1, collate_fn=None):
        self.batch_size, self.collate_fn = batch_size, collate_fn
        self.pool: list = []

    def ready(self) -> bool:
        """Whether the pool holds a whole batch."""
        return len(self.pool) >= self.batch_size

    def pop(self):
        """The next element: the first `batch_size` pooled (ref, item) pairs' items, collated."""
        taken, self.pool = self.pool[: self.batch_size], self.pool[self.batch_size :]
        items = [item for _, item in taken]
        return self.collate_fn(items) if self.collate_fn else {"items": items}


class PackedRows:
    """Sequence packing on a stream: rows of several items up to `max_tokens_per_row` tokens (text + vision,
    the items' `num_tokens`), `rows_per_batch` rows per element; `collate_fn(rows)` (e.g. `DataCollator`,
    which makes `position_ids` / `segment_ids`; default `{"rows": rows}`).

    Once the pool holds `pool_size` items it is packed best-fit-decreasing (`pack_best_fit_decreasing`) and
    the `rows_per_batch` fullest rows are emitted; the other items stay in the pool for the next packing. At
    the end of the stream the rest is emitted the same way. An item longer than a row gets a row of its own.
    The pool holds decoded pixels: memory ~ pool_size x one item's `pixel_values`.
    """

    def __init__(
        self, max_tokens_per_row: int, rows_per_batch: int = 1, collate_fn=None, pool_size: int = 32
    ):
        self.capacity, self.rows_per_batch = max_tokens_per_row, rows_per_batch
        self.collate_fn, self.pool_size = collate_fn, max(pool_size, 1)
        self.pool: list = []

    def ready(self) -> bool:
        """Whether the pool is full enough to pack."""
        return len(self.pool) >= self.pool_size

    def pop(self):
        """The next element: the `rows_per_batch` fullest best-fit rows of the pool, collated."""
        lengths = [item["num_tokens"] for _, item in self.pool]
        rows = pack_best_fit_decreasing(range(len(self.pool)), lengths, self.capacity)
        rows.sort(key=lambda r: -sum(lengths[i] for i in r))  # stable: ties keep packing order
        taken = rows[: self.rows_per_batch]
        used = {i for r in taken for i in r}
        out = [[self.pool[i][1] for i in r] for r in taken]
        self.pool = [p for i, p in enumerate(self.pool) if i not in used]
        return self.collate_fn(out) if self.collate_fn else {"rows": out}


__all__ = ["Batched", "PackedRows", "first_item"]
