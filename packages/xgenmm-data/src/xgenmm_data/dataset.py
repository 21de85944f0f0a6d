"""Map-style SFT dataset over a mixture, with token-accurate lengths and counted bad-record skipping.

At construction every selected record is checked (turns, `<image>` rules, image files via their headers,
tokenization + labels) and its exact length is computed: text tokens + vision tokens, image sizes read from
the image header without decoding pixels. Bad records are logged once each (source file, record index, id,
reason), counted in `bad_counts`, and left out; if the bad fraction exceeds `max_bad_fraction` (default 1 %)
construction raises `DataError`. Images that only fail when decoded (truncated files) are caught in
`__getitem__`, which then returns None (the collator drops it), logs and counts them the same way - once:
a sample that failed is not decoded, logged or counted again in later epochs.
"""

from __future__ import annotations

import logging
from collections import Counter

from torch.utils.data import Dataset

from .processing import BadSample, SampleProcessor, image_header_size
from .sources import DataError, Mixture, SampleRef
from .tokenization import IMAGE_TOKEN

logger = logging.getLogger("xgenmm_data")


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0][:60]


class SupervisedDataset(Dataset):
    """LLaVA-format SFT data -> items of the xgenmm_data contract.

    Args:
        data: a mixture YAML / data file / folder path, a `Mixture`, or a list of `SampleRef`.
        tokenizer: a transformers-compatible tokenizer containing the `<image>` token (and the template's
            role tokens).
        image_processor: callable PIL.Image -> `(pixels (Np,3,S,S), (w,h))` or an object with
            `.pixel_values` / `.image_size`.
        vision_tokens_for: callable (w, h) -> number of LM tokens the image becomes (e.g. 384/512/640).
        template: default template name for sources that do not set one.
        max_length: text-token budget before image expansion (the original's 2048).
        max_images: images per record above which the record is skipped (the original's 4).
        max_bad_fraction: fail when more than this fraction of records is bad.
    """

    def __init__(
        self,
        data,
        tokenizer,
        image_processor=None,
        vision_tokens_for=None,
        template="phi_3",
        max_length: int | None = 2048,
        max_images: int = 4,
        max_bad_fraction: float = 0.01,
        image_token: str = IMAGE_TOKEN,
        path_map=None,
        image_root=None,
    ):
        if isinstance(data, Mixture):
            refs = data.load()
        elif isinstance(data, list):
            refs = data
        else:
            refs = Mixture.from_path(data, path_map=path_map, image_root=image_root).load()
        self.processor = SampleProcessor(
            tokenizer, image_processor, vision_tokens_for, template, max_length, max_images, image_token
        )
        self.max_bad_fraction = max_bad_fraction
        self.num_records = len(refs)
        self.bad_counts: Counter = Counter()
        self.bad_records: list[tuple[str, int, object, str]] = []
        self.num_truncated = 0
        self.failed: set[int] = set()  # indices whose images failed to decode in __getitem__
        self.samples: list[SampleRef] = []
        self.lengths: list[int] = []  # num_tokens per kept sample (text + vision)
        self.has_image: list[bool] = []
        for ref in refs:
            try:
                _, enc = self.processor.encode_text(ref)
                sizes = [image_header_size(p) for p in ref.images[: enc.num_image_tokens]]
            except BadSample as e:
                self._report(ref, str(e))
                continue
            if enc.truncated:
                self.num_truncated += 1
                logger.info(
                    "%s: truncated from %d to %d text tokens",
                    ref.where(),
                    enc.num_text_tokens,
                    len(enc.input_ids),
                )
            self.samples.append(ref)
            self.lengths.append(self.processor.num_tokens(enc, sizes))
            self.has_image.append(bool(sizes))
        if self.num_truncated:
            logger.warning(
                "%d of %d records truncated at max_length=%s", self.num_truncated, len(refs), max_length
            )
        self._check_fraction()

    # -- bad records --------------------------------------------------------------------------------------

    def _report(self, ref: SampleRef, reason: str) -> None:
        logger.warning("skipping %s record %d (id=%r): %s", ref.source, ref.index, ref.id, reason)
        self.bad_counts[_reason_kind(reason)] += 1
        self.bad_records.append((ref.source, ref.index, ref.id, reason))

    @property
    def num_bad(self) -> int:
        """Records skipped so far (at construction and in `__getitem__`)."""
        return sum(self.bad_counts.values())

    def _check_fraction(self) -> None:
        total = max(self.num_records, 1)
        if self.num_bad / total > self.max_bad_fraction:
            lines = [f"{k}: {v}" for k, v in self.bad_counts.most_common()]
            raise DataError(
                [
                    f"{self.num_bad} of {self.num_records} records are bad "
                    f"({self.num_bad / total:.2%} > max_bad_fraction {self.max_bad_fraction:.2%})",
                    *lines,
                ]
            )

    # -- access -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        """Item dict for an int; a list of items for a list of ints (a packed row). None = bad, skipped."""
        if isinstance(index, (list, tuple)):
            return [self[i] for i in index]
        if index in self.failed:  # already logged and counted
            self._check_fraction()
            return None
        ref = self.samples[index]
        try:
            return self.processor(ref)
        except BadSample as e:
            self.failed.add(index)
            self._report(ref, str(e))
            self._check_fraction()
            return None


__all__ = ["SupervisedDataset", "logger"]
