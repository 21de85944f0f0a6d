"""Training data on top of xgenmm_data: the SFT dataset, preference (DPO) records, the step plan, and the
record texts a tiny tokenizer is trained on.

Step plan: the data package's samplers are built with ``world_size = W × G`` virtual ranks (W processes,
G gradient-accumulation micro-batches), as the reference does (LAVIS `sft_data_utils.LengthGroupedSampler`).
One global step of the plan is one optimizer step; process r takes batches ``[m·W + r for m in range(G)]``. So
1 process × 2 accumulation steps and 2 processes × 1 see the very same samples in every optimizer step, each
sample once per epoch, and a resume starts at step k by slicing the plan (no skipped batch is ever read).
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import DataLoader, Dataset

from xgenmm_data import (
    BadSample,
    DataCollator,
    LengthGroupedSampler,
    Mixture,
    PackedBatchSampler,
    SampleProcessor,
    SupervisedDataset,
    load_mixture,
    record_messages,
    resolve_image_path,
)

from .config import Config
from .errors import BadPreferenceRecord, TrainError


def all_texts(records: list[dict]) -> list[str]:
    """Every conversation/preference string of a list of records (to train a tiny tokenizer on). Records that
    fail the data package's record check (`xgenmm_data.record_messages`) are left out here: the dataset
    reports, counts and skips them."""
    texts = []
    for r in records:
        try:
            messages = record_messages(r)
        except BadSample:
            continue
        texts += [m["content"] for m in messages]
        texts += [r[k] for k in ("chosen", "rejected", "question", "answer") if isinstance(r.get(k), str)]
    return texts


def mixture_texts(path: str) -> list[str]:
    """``all_texts`` of every record of the LLaVA JSON or mixture YAML at ``path`` (``model.init=tiny``)."""
    return all_texts([r.record for r in load_mixture(path)])


def build_sft_dataset(config: Config, tokenizer, model) -> SupervisedDataset:
    """The ``xgenmm_data.SupervisedDataset`` of ``data.path`` with the model's anyres processor and vision
    token counts, the ``data`` section's template, length limit and image paths."""
    d = config.data
    return SupervisedDataset(
        d.path,
        tokenizer,
        image_processor=model.image_processor(d.resize_backend),
        vision_tokens_for=model.num_vision_tokens,
        template=d.template,
        max_length=d.max_length,
        path_map=d.path_map or None,
        image_root=d.image_folder,
    )


def build_plan(config: Config, lengths: list[int], world_size: int, epoch: int) -> list[list]:
    """The global steps of ``epoch``: each a list of W × G batches (lists of indices, or of rows when packed)."""
    t, d = config.train, config.data
    virtual = world_size * t.grad_accum
    if d.batching == "packed":
        sampler = PackedBatchSampler(
            lengths,
            max_tokens_per_row=d.pack_tokens,
            rows_per_batch=t.micro_batch_size,
            world_size=virtual,
            seed=t.seed,
        )
    else:
        sampler = LengthGroupedSampler(
            lengths,
            batch_size=t.micro_batch_size,
            world_size=virtual,
            seed=t.seed,
            megabatch_steps=d.megabatch_steps,
        )
    return sampler.plan(epoch)


def rank_batches(step: list, rank: int, world_size: int, grad_accum: int) -> list:
    """The G micro-batches of process ``rank`` in one global step."""
    return [step[m * world_size + rank] for m in range(grad_accum)]


class _StepBatches(torch.utils.data.Sampler):
    """Yields this rank's micro-batches for plan steps ``start..`` in order (a DataLoader batch_sampler)."""

    def __init__(self, plan: list, start: int, rank: int, world_size: int, grad_accum: int):
        self.batches = [b for step in plan[start:] for b in rank_batches(step, rank, world_size, grad_accum)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def step_loader(dataset: Dataset, collate_fn, plan: list, start: int, rank: int, world: int, config: Config):
    """DataLoader over this rank's micro-batches from plan step ``start``; group them by G yourself."""
    sampler = _StepBatches(plan, start, rank, world, config.train.grad_accum)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=config.data.num_workers,
        persistent_workers=False,
        # Page-locked batches: the trainer's `to(device, non_blocking=True)` is then really asynchronous (from
        # pageable memory the copy of a micro-batch's pixels, ~70 MB at 8 images of 5 crops, blocks the step).
        pin_memory=torch.cuda.is_available(),
    )


class PlanSteps:
    """The optimizer steps of a map-style dataset (SFT, DPO): the step plan of each epoch, sliced on resume.

    The trainer asks a *step source* for `steps_per_epoch`, `epoch_steps(epoch, start)` (this rank's lists of
    `grad_accum` micro-batches, from plan step `start` to the end of the epoch), `state_dict()` (the data
    position beyond the step counter, stored in the trainer checkpoint; None here: the step is the position) and
    `load_state_dict(state)`. `pretrain.StreamSteps` is the streamed counterpart."""

    def __init__(self, config: Config, dataset, collate_fn, rank: int, world_size: int):
        self.config, self.dataset, self.collate_fn = config, dataset, collate_fn
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = len(build_plan(config, dataset.lengths, world_size, 0))
        if self.steps_per_epoch == 0:
            t = config.train
            raise TrainError(
                f"{config.data.path}: {len(dataset)} usable samples, not enough for one optimizer step of "
                f"{world_size} process(es) × {t.grad_accum} × {t.micro_batch_size}; add data or lower the batch size"
            )

    def describe(self) -> str:
        """The data part of the trainer's start line."""
        return f"{len(self.dataset)} samples, {self.steps_per_epoch} steps/epoch"

    def epoch_steps(self, epoch: int, start: int):
        """This rank's optimizer steps of ``epoch`` from plan step ``start``: each a list of ``grad_accum``
        collated micro-batches."""
        plan = build_plan(self.config, self.dataset.lengths, self.world_size, epoch)
        loader = step_loader(
            self.dataset, self.collate_fn, plan, start, self.rank, self.world_size, self.config
        )
        batches = iter(loader)
        for _ in range(start, len(plan)):
            yield [next(batches) for _ in range(self.config.train.grad_accum)]

    def state_dict(self):
        """None: the trainer's step counter is the whole data position."""
        return None

    def load_state_dict(self, state) -> None:
        """Nothing to restore (see ``state_dict``)."""


# ---------------------------------------------------------------------------------------------------------
# preference data (DPO)


def _normalise_preference(record: dict, where: str) -> dict:
    """LLaVA-like ``{conversations (prompt), chosen, rejected, image}`` or ``{prompt, chosen, rejected, image(s)}``
    → the LLaVA-like form. Raises BadPreferenceRecord naming the record."""
    try:
        record_messages(record)  # an object whose turns have a known role and a string value
    except BadSample as e:
        raise BadPreferenceRecord(f"{where}: {e}") from None
    for key in ("chosen", "rejected"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise BadPreferenceRecord(f"{where}: preference record needs a non-empty string '{key}'")
    out = dict(record)
    if "conversations" not in out:
        if not isinstance(record.get("prompt"), str):
            raise BadPreferenceRecord(
                f"{where}: preference record needs 'conversations' or a string 'prompt'"
            )
        out["conversations"] = [{"from": "human", "value": record["prompt"]}]
    if "image" not in out and "images" in out:
        imgs = out.pop("images")
        out["image"] = imgs[0] if isinstance(imgs, list) and len(imgs) == 1 else imgs
    conv = out["conversations"]
    if not conv or conv[-1].get("from", conv[-1].get("role")) not in ("human", "user"):
        raise BadPreferenceRecord(f"{where}: the prompt conversation must end with a human turn")
    return out


def _last_reply_only(labels: torch.Tensor) -> torch.Tensor:
    """Keep the last contiguous run of supervised labels (the final reply + its end marker)."""
    sup = (labels != -100).nonzero().flatten()
    if len(sup) == 0:
        return labels
    end = int(sup[-1])
    start = end
    while start - 1 >= 0 and labels[start - 1] != -100:
        start -= 1
    out = torch.full_like(labels, -100)
    out[start : end + 1] = labels[start : end + 1]
    return out


class PreferenceDataset(Dataset):
    """Preference pairs → items ``{"chosen": item, "rejected": item, "index": i}`` (items of the data contract;
    labels cover only the final reply). Images are decoded once per pair and shared. A record that cannot be
    used (bad turns, an image that is missing or unreadable) stops the run with ``BadPreferenceRecord``: a pair
    is never skipped."""

    def __init__(self, path: str, tokenizer, model, config: Config):
        d = config.data
        mixture = Mixture.from_path(path, path_map=d.path_map or None, image_root=d.image_folder)
        self.processor = SampleProcessor(
            tokenizer,
            model.image_processor(d.resize_backend),
            model.num_vision_tokens,
            d.template,
            d.max_length,
        )
        self.pairs = []
        self.lengths = []
        for ref in mixture.load():
            rec = _normalise_preference(ref.record, ref.where())
            if rec.get("image") is not None and not ref.images:
                paths = rec["image"] if isinstance(rec["image"], list) else [rec["image"]]
                ref = dataclasses.replace(ref, images=[], image_is_list=isinstance(rec["image"], list))
                for p in paths:
                    resolved, err = resolve_image_path(p, mixture.path_map, mixture.image_root)
                    if err:
                        raise BadPreferenceRecord(f"{ref.where()}: {err}")
                    ref.images.append(resolved)
            pair = []
            for key in ("chosen", "rejected"):
                conv = rec["conversations"] + [{"from": "gpt", "value": rec[key]}]
                pair.append(dataclasses.replace(ref, record={**rec, "conversations": conv}))
            self.pairs.append(tuple(pair))
            _, enc = self.processor.encode_text(pair[0])
            self.lengths.append(len(enc.input_ids))

    @property
    def ids(self) -> list:
        """The record id of each pair, in dataset order."""
        return [p[0].id for p in self.pairs]

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        """Pair ``index`` → {"chosen", "rejected", "index"}; an image that cannot be read stops the run with a
        ``BadPreferenceRecord`` naming the record."""
        chosen_ref, rejected_ref = self.pairs[index]
        try:
            chosen = self.processor(chosen_ref)
        except BadSample as e:
            raise BadPreferenceRecord(f"{chosen_ref.where()}: {e}") from None
        _, enc = self.processor.encode_text(rejected_ref)
        rejected = dict(chosen, input_ids=enc.input_ids, labels=enc.labels)
        chosen["labels"] = _last_reply_only(chosen["labels"])
        rejected["labels"] = _last_reply_only(rejected["labels"])
        return {"chosen": chosen, "rejected": rejected, "index": index}


class PreferenceCollator:
    """Pairs → one batch of 2B rows: chosen rows first, then rejected rows; plus ``index`` (B,)."""

    def __init__(self, pad_token_id: int):
        self.collate = DataCollator(pad_token_id)

    def __call__(self, pairs: list[dict]) -> dict:
        batch = self.collate([p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])
        batch["index"] = torch.tensor([p["index"] for p in pairs], dtype=torch.long)
        return batch


__all__ = [
    "PlanSteps",
    "PreferenceCollator",
    "PreferenceDataset",
    "all_texts",
    "build_plan",
    "build_sft_dataset",
    "mixture_texts",
    "rank_batches",
    "step_loader",
]
