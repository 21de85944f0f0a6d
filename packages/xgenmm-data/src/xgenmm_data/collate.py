"""Collate items into the batch `XGenMM.forward` takes (docs/interfaces.md; LAVIS
`sft_data_utils.DataCollatorForSupervisedDataset`).

Plain batch (a list of items)::

    input_ids (B, L) long, right-padded with pad_token_id     attention_mask (B, L) long
    labels (B, L) long, -100 on padding                       pixel_values: B lists of (Np, 3, S, S)
    image_sizes: B lists of (w, h)

Packed batch (a list of rows, each a list of items, e.g. from `PackedBatchSampler`) adds, in TEXT
coordinates: `position_ids (B, L)` restarting at 0 for every sample and `segment_ids (B, L)` = index of the
sample inside its row, -1 on padding. A row's images are the concatenation of its samples' images in order.
In packed rows the first label of every sample is set to -100 so no loss crosses a sample boundary.
None items (bad samples the dataset skipped) are dropped.
"""

from __future__ import annotations

import torch

from .tokenization import IGNORE_INDEX


class DataCollator:
    """Callable `items -> batch`; `rows -> packed batch` when the elements are lists."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def _width(self, lengths) -> int:
        L = max(lengths) if lengths else 0
        m = self.pad_to_multiple_of
        return -(-L // m) * m if m else L

    def __call__(self, batch):
        if batch and isinstance(batch[0], list):
            return self.collate_packed(batch)
        return self.collate(batch)

    def collate(self, items: list[dict]) -> dict:
        """Plain batch: `input_ids`, `attention_mask`, `labels` `(B, L)` right-padded, `pixel_values` (B lists of
        `(Np, 3, S, S)`), `image_sizes` (B lists of (w, h)); None items are dropped."""
        items = [it for it in items if it is not None]
        B, L = len(items), self._width([len(it["input_ids"]) for it in items])
        input_ids = torch.full((B, L), self.pad_token_id, dtype=torch.long)
        labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((B, L), dtype=torch.long)
        for b, it in enumerate(items):
            n = len(it["input_ids"])
            input_ids[b, :n] = it["input_ids"]
            labels[b, :n] = it["labels"]
            attention_mask[b, :n] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": [list(it["pixel_values"]) for it in items],
            "image_sizes": [[tuple(s) for s in it["image_sizes"]] for it in items],
        }

    def collate_packed(self, rows: list[list[dict]]) -> dict:
        """Packed batch: one row per list of items, plus `position_ids` / `segment_ids` `(B, L)` (module docstring)."""
        rows = [[it for it in row if it is not None] for row in rows]
        rows = [row for row in rows if row]
        B, L = len(rows), self._width([sum(len(it["input_ids"]) for it in row) for row in rows])
        input_ids = torch.full((B, L), self.pad_token_id, dtype=torch.long)
        labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((B, L), dtype=torch.long)
        position_ids = torch.zeros((B, L), dtype=torch.long)
        segment_ids = torch.full((B, L), -1, dtype=torch.long)
        pixel_values, image_sizes = [], []
        for b, row in enumerate(rows):
            start, pv, sz = 0, [], []
            for s, it in enumerate(row):
                n = len(it["input_ids"])
                input_ids[b, start : start + n] = it["input_ids"]
                labels[b, start : start + n] = it["labels"]
                labels[b, start] = IGNORE_INDEX
                attention_mask[b, start : start + n] = 1
                position_ids[b, start : start + n] = torch.arange(n)
                segment_ids[b, start : start + n] = s
                pv.extend(it["pixel_values"])
                sz.extend(tuple(x) for x in it["image_sizes"])
                start += n
            pixel_values.append(pv)
            image_sizes.append(sz)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": pixel_values,
            "image_sizes": image_sizes,
            "position_ids": position_ids,
            "segment_ids": segment_ids,
        }


__all__ = ["DataCollator"]
