"""Pre-training recipe: the next-token loss on text tokens of streamed caption and interleaved webdataset shards.

Same engine, DeepSpeed set-up, checkpoints and loss normalisation as SFT (`PretrainRecipe` inherits
`SFTRecipe.train_step`: summed token CE over the supervised tokens of the whole optimizer step); what differs is
the data (`texts`, `build_data`, `step_source`, `finish` below):

* `data.path` is a stream mixture YAML (`xgenmm_data.StreamMixture`: streams of shard URLs by weight, shuffle
  buffer, seed); each rank reads its own shards (`urls[rank::W][worker::N]`), so there is no global plan and
  `train.max_steps` sets the length of the run;
* samples become items with `xgenmm_data.PretrainProcessor` (`<image>` / `<image placeholder>` masked, the
  model masks the vision positions), images as anyres crops or at base resolution (`data.image_mode`);
* `data.batching=packed` packs items into rows of `data.pack_tokens` tokens (text + vision), `micro_batch_size`
  rows per micro-batch (`xgenmm_data.PackedRows`); otherwise `micro_batch_size` padded samples;
* the stream position of every rank and DataLoader worker is stored in `trainer_state.json` (`"data"`), so a
  resumed run reads exactly the samples the uninterrupted run would have read.

Which parts train: `model.train_vision_encoder` (default false), `model.train_vision_tokenizer`,
`model.train_lang_model` (false = the warm-up stage that trains only the perceiver).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from xgenmm_data import Batched, DataCollator, PackedRows, PretrainProcessor, ShardStream
from xgenmm_vision import pil_resize, torch_resize

from .config import Config
from .modeling import base_model
from .sft import SFTRecipe
from .trainer import train


class BaseResolution:
    """PIL image → `(pixels (1, 3, S, S), (w, h))`: the image squashed to the vision tower's size S and normalised
    as the anyres processor does for its base crop (one perceiver group per image)."""

    def __init__(self, model, resize_backend: str = "pil"):
        self.size = model.config.vision_config.image_size
        self.resize_backend = resize_backend
        self.mean = torch.tensor(model.config.image_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(model.config.image_std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image):
        image = image.convert("RGB")
        s = self.size
        if self.resize_backend == "torch":
            pixels = torch_resize(torch.from_numpy(np.array(image, dtype=np.uint8)), (s, s))
        else:
            pixels = torch.from_numpy(np.array(pil_resize(image, (s, s)), dtype=np.uint8))
        pixels = pixels.permute(2, 0, 1).float().div_(255).sub_(self.mean).div_(self.std)
        return pixels.unsqueeze(0), image.size


def _as_is(element):
    """DataLoader collate_fn: the stream's elements are batches already."""
    return element


def _gather(obj, world: int) -> list:
    if world == 1 or not torch.distributed.is_initialized():
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


class StreamSteps:
    """Step source (see `data.PlanSteps`) over this rank's `ShardStream`: `grad_accum` micro-batches per step,
    one "epoch" of `train.max_steps` steps; `state_dict()` = the stream positions of all ranks (gathered)."""

    def __init__(self, config: Config, stream, collate_fn, rank: int, world_size: int):
        self.config, self.stream, self.rank, self.world_size = config, stream, rank, world_size
        self.steps_per_epoch = config.train.max_steps
        self.loader = DataLoader(
            stream,
            batch_size=None,
            collate_fn=_as_is,
            num_workers=config.data.num_workers,
            pin_memory=torch.cuda.is_available(),
        )

    def describe(self) -> str:
        """The data part of the trainer's start line: each stream's shards and weight."""
        sources = ", ".join(
            f"{s.name} ({len(s.urls)} shard(s), weight {s.weight:g})" for s in self.stream.mixture.sources
        )
        return f"streams {sources}"

    def epoch_steps(self, epoch: int, start: int):
        """Steps ``start..max_steps`` of this rank's stream, each a list of ``grad_accum`` collated micro-batches;
        a stream that ends first raises naming the rank and the step."""
        batches = iter(self.loader)
        for step in range(start, self.steps_per_epoch):
            micro = []
            for _ in range(self.config.train.grad_accum):
                try:
                    batch = next(batches)
                except StopIteration:
                    raise RuntimeError(
                        f"{self.config.data.path}: the stream of rank {self.rank} ended at step {step} of "
                        f"{self.steps_per_epoch}; set `epochs: null` in the mixture (stream forever) or lower "
                        "train.max_steps"
                    ) from None
                self.stream.record(batch)  # the position after this batch (pops "stream_state")
                micro.append(batch)
            yield micro

    def state_dict(self) -> list:
        """The stream position of every rank (collective)."""
        return _gather(self.stream.state_dict(), self.world_size)

    def load_state_dict(self, state) -> None:
        """Restore this rank's stream position from a checkpoint of a run with the same number of processes."""
        if state is None:
            raise ValueError(
                "checkpoint has no stream position (trainer_state.json 'data'): not a pretrain run"
            )
        if len(state) != self.world_size:
            raise ValueError(
                f"checkpoint stream position is for {len(state)} rank(s), this run has {self.world_size}: "
                "resume with the same number of processes"
            )
        self.stream.load_state_dict(state[self.rank])


class PretrainRecipe(SFTRecipe):
    """SFT's step and loss on a `ShardStream` of caption / interleaved samples."""

    def texts(self, config: Config, limit: int = 2000) -> list[str]:
        """Caption / document texts of the first `limit` stream samples (to train a tiny tokenizer on)."""
        out = []
        for sample in ShardStream(config.data.path, rank=0, world_size=1):
            out.append(sample["text"].replace("<image>", " ").replace("<|endofchunk|>", " "))
            if len(out) >= limit:
                break
        return out

    def build_data(self, config: Config, model, tokenizer):
        """→ (this rank's ``ShardStream`` of ``data.path`` yielding collated micro-batches, padded or packed;
        the ``DataCollator``). The images: anyres crops, or one base-resolution crop (``data.image_mode``)."""
        d = config.data
        model = base_model(model)
        train_new_token_rows(model, config)
        if d.image_mode == "base":
            latents = model.config.sampler_config.num_latents
            image_processor, vision_tokens_for = (
                BaseResolution(model, d.resize_backend),
                lambda _size: latents,
            )
        else:
            image_processor, vision_tokens_for = (
                model.image_processor(d.resize_backend),
                model.num_vision_tokens,
            )
        processor = PretrainProcessor(
            tokenizer,
            image_processor,
            vision_tokens_for,
            max_length=d.max_length,
            max_images=d.max_images,
            endofchunk_loss=d.endofchunk_loss,
        )
        collate = DataCollator(tokenizer.pad_token_id)
        mb = config.train.micro_batch_size
        if d.batching == "packed":
            batcher = PackedRows(d.pack_tokens, rows_per_batch=mb, collate_fn=collate, pool_size=d.pack_pool)
        else:
            batcher = Batched(mb, collate)
        rank, world = _rank_world()
        stream = ShardStream(
            d.path, processor, batcher, rank=rank, world_size=world, max_bad_fraction=d.max_bad_fraction
        )
        self.stream = stream
        return stream, collate

    def step_source(self, config: Config, dataset, collate_fn, rank: int, world_size: int) -> StreamSteps:
        """The steps of this rank's stream (no plan: ``train.max_steps`` sets the length)."""
        return StreamSteps(config, dataset, collate_fn, rank, world_size)

    def finish(self, config, engine, tokenizer, rank, world, device) -> dict:
        """The streams' read and bad-sample counts over all ranks (collective); rank 0 prints them."""
        reports = _gather(self.stream.report(), world)
        samples = sum(r["samples"] for r in reports)
        bad: dict = {}
        for r in reports:
            for reason, n in r["bad"].items():
                bad[reason] = bad.get(reason, 0) + n
        shard_errors = [e for r in reports for e in r["shard_errors"]]
        if rank == 0:
            line = f"stream: {samples:,} sample(s) read, {sum(bad.values()):,} bad"
            if bad:
                line += f" {bad}; last: {reports[0]['bad_examples'][-3:]}"
            if shard_errors:
                line += f"; {len(shard_errors)} unreadable shard(s): {[e[0] for e in shard_errors[:5]]}"
            print(line, file=sys.stderr)
        return {"stream_samples": samples, "stream_bad": bad, "stream_shard_errors": shard_errors}

    def next_command(self, config: Config, ckpt: Path | None) -> str:
        """The SFT command that continues from the pre-trained model."""
        if ckpt is None:
            return ""
        return f"uv run xgenmm-train sft --config <sft.yaml> model.path={ckpt / 'model'} data.path=<llava mixture>"


def train_new_token_rows(model, config: Config) -> None:
    """With the LM frozen (the warm-up stage) the rows of `<image>`, `<image placeholder>`, `<|endofchunk|>`
    (the decoupled `additional_embedding` / `additional_fc`) still train with the perceiver: they are new, and
    `<|endofchunk|>` is a training target of every sample."""
    if config.model.train_lang_model or not config.model.train_vision_tokenizer:
        return
    model.get_input_embeddings().additional_embedding.requires_grad_(True)
    model.get_output_embeddings().additional_fc.requires_grad_(True)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def run_pretrain(config: Config) -> dict:
    """Run a pre-training job (``trainer.train`` with ``PretrainRecipe``) → the run's summary dict."""
    return train(config, PretrainRecipe())


__all__ = ["BaseResolution", "PretrainRecipe", "StreamSteps", "run_pretrain"]
