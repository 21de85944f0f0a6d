"""Direct preference optimisation recipe (sigmoid DPO, optional RPO term and label smoothing).

The reference policy never needs a second full model in memory:

* ``dpo.reference=precompute``: before training, one pass over the preference data with the starting
  weights writes ``<run_dir>/reference_logps/rank-XXXXX.jsonl`` (one line per record: index, id, chosen and
  rejected summed log-probs). The pass is resumable: lines already written are not recomputed.
* ``dpo.reference=lora`` (with ``lora.enabled``): the reference is the same model with the adapters disabled
  (peft ``disable_adapter``); the perceiver, trainable next to the adapters, is swapped back too.
* ``dpo.reference=model``: a frozen copy of the starting model (costs its memory; kept for comparison).

Per pair: ``loss = dpo_loss(...) + rpo_alpha · NLL(chosen) / |chosen tokens|``; a step's loss is the mean over
all pairs of the step on every rank.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from .config import Config
from .data import PreferenceCollator, PreferenceDataset, mixture_texts
from .errors import TrainError
from .losses import dpo_loss
from .modeling import base_model
from .recipe import Recipe, StepContext, all_reduce_sum, model_inputs, to_device, vision_tokens_times_zero
from .trainer import train


def pair_logps(model_or_engine, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward a preference batch (chosen rows then rejected rows) → (chosen (B,), rejected (B,) summed
    log-probs, chosen supervised-token counts (B,))."""
    # token_logps: = sequence_logps(logits, labels), with the LM head on the supervised positions only.
    out = model_or_engine(**model_inputs(batch), token_logps=True)
    logps = out.token_logps.sum(-1)
    B = logps.shape[0] // 2
    n_chosen = (out.labels[:B, 1:] != -100).sum(-1)
    return logps[:B], logps[B:], n_chosen


class DPORecipe(Recipe):
    """Sigmoid DPO on preference pairs against the ``dpo.reference`` policy (see the module docstring)."""

    bar_keys = ("loss", "reward_acc", "margin")

    def __init__(self):
        self.ref_logps: torch.Tensor | None = None  # (N, 2) for reference=precompute
        self.ref_model = None
        self._stand_in: dict | None = None

    def texts(self, config: Config) -> list[str]:
        """The prompt, chosen and rejected strings of every record of ``data.path`` (init=tiny)."""
        return mixture_texts(config.data.path)

    def build_data(self, config: Config, model, tokenizer):
        """→ (``PreferenceDataset`` of ``data.path``, ``PreferenceCollator``: chosen rows, then rejected rows)."""
        dataset = PreferenceDataset(config.data.path, tokenizer, base_model(model), config)
        self.dataset, self.collate = dataset, PreferenceCollator(tokenizer.pad_token_id)
        return dataset, self.collate

    def stand_in(self) -> dict:
        """The first pair with an image, collated: its vision tokens × 0 go into a text-only micro-batch's
        forward (``recipe.vision_tokens_times_zero``), so that ZeRO-2 ranks reduce the same gradients."""
        if self._stand_in is None:
            index = next((i for i, pair in enumerate(self.dataset.pairs) if pair[0].images), None)
            if index is None:
                raise TrainError("data.path: a text-only pair beside image pairs, but no pair has an image")
            self._stand_in = self.collate([self.dataset[index]])
        return self._stand_in

    # -- reference policy -------------------------------------------------------------------------------------

    def prepare(self, config, engine, dataset, collate, rank, world, device) -> None:
        """The reference policy from the starting weights: a frozen copy (``model``), the log-probs of every
        pair (``precompute``), or nothing to do (``lora``: the adapters are switched off per batch)."""
        ref = config.dpo.reference
        if ref == "model":
            self.ref_model = copy.deepcopy(engine.module).eval().requires_grad_(False)
        elif ref == "precompute":
            out_dir = Path(config.run_dir) / "reference_logps"
            self.ref_logps = precompute_reference(
                engine, dataset, collate, out_dir, rank, world, device, config.train.micro_batch_size
            )

    def reference(self, ctx: StepContext, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference policy's summed log-probs of a device batch → (chosen (B,), rejected (B,))."""
        ref = ctx.config.dpo.reference
        if ref == "precompute":
            rows = self.ref_logps[batch["index"].cpu()]
            return rows[:, 0].to(ctx.device), rows[:, 1].to(ctx.device)
        with torch.no_grad():
            if ref == "lora":
                was_training = ctx.engine.training
                ctx.engine.eval()
                with ctx.engine.module.disable_adapter():
                    rc, rr, _ = pair_logps(ctx.engine, batch)
                ctx.engine.train(was_training)
            else:
                rc, rr, _ = pair_logps(self.ref_model, batch)
        return rc, rr

    # -- one step ---------------------------------------------------------------------------------------------

    def train_step(self, ctx: StepContext, micro: list[dict]) -> dict:
        """Each micro-batch backpropagates the sum of its pairs' losses × W / (pairs of the step on all ranks)
        → this rank's sums: loss, pairs, rewards, accuracy, margin, tokens, samples."""
        d = ctx.config.dpo
        engine = ctx.engine
        n_local = sum(int(b["index"].numel()) for b in micro)
        n_step = all_reduce_sum([n_local], ctx.device)[0]
        scale = ctx.world_size / max(n_step, 1.0)
        sums = {"loss_sum": 0.0, "pairs": n_local, "chosen": 0.0, "rejected": 0.0, "acc": 0.0, "margin": 0.0}
        sums.update(tokens=0.0, samples=float(n_local))
        for batch in micro:
            batch = to_device(batch, ctx.device)
            rc, rr = self.reference(ctx, batch)
            with vision_tokens_times_zero(engine, batch, self.stand_in, ctx.device):
                pc, pr, n_chosen = pair_logps(engine, batch)
            losses, m = dpo_loss(pc, pr, rc, rr, beta=d.beta, label_smoothing=d.label_smoothing)
            if d.rpo_alpha:
                losses = losses + d.rpo_alpha * (-pc / n_chosen.clamp(min=1))
            loss = ctx.guard(losses.sum() * scale)
            engine.backward(loss, scale_wrt_gas=False)
            ctx.engine_step()
            sums["loss_sum"] += float(losses.detach().sum())
            sums["chosen"] += float(m["rewards/chosen"].sum())
            sums["rejected"] += float(m["rewards/rejected"].sum())
            sums["acc"] += float(m["rewards/accuracy"].sum())
            sums["margin"] += float(m["rewards/margin"].sum())
            sums["tokens"] += float(batch["attention_mask"].sum())
        return sums

    def metrics(self, sums: dict) -> dict:
        """Means over the step's pairs: loss, rewards/chosen, rewards/rejected, reward_acc, margin."""
        n = max(sums["pairs"], 1.0)
        return {
            "loss": sums["loss_sum"] / n,
            "rewards/chosen": sums["chosen"] / n,
            "rewards/rejected": sums["rejected"] / n,
            "reward_acc": sums["acc"] / n,
            "margin": sums["margin"] / n,
        }

    def summary_rows(self, last: dict) -> list:
        """The final loss and reward accuracy."""
        return [
            ("final loss", last.get("loss", float("nan"))),
            ("reward accuracy", last.get("reward_acc", 0.0)),
        ]


@torch.no_grad()
def precompute_reference(
    engine, dataset, collate, out_dir: Path, rank, world, device, batch_size: int
) -> torch.Tensor:
    """Reference log-probs of every pair with the current (starting) weights → (N, 2) [chosen, rejected].

    Each rank computes indices ``rank::world`` and appends to its own JSONL file, so an interrupted pass
    resumes where it stopped. All ranks then read every file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mine = out_dir / f"rank-{rank:05d}.jsonl"
    done, good = set(), []
    if mine.exists():
        for line in mine.read_text().splitlines():
            try:
                done.add(json.loads(line)["index"])
                good.append(line)
            except (json.JSONDecodeError, KeyError):
                break  # a torn last line from a killed pass: recompute from there
        mine.write_text("".join(ln + "\n" for ln in good))
    todo = [i for i in range(rank, len(dataset), world) if i not in done]
    # Ranks must run the same number of forwards under ZeRO-3 (collective parameter gathers).
    n_batches = -(-len(todo) // batch_size)
    n_max = int(all_reduce_max(n_batches, device))
    was_training = engine.training
    engine.eval()
    ids = dataset.ids
    with open(mine, "a") as f:
        for b in range(n_max):
            chunk = todo[b * batch_size : (b + 1) * batch_size] or [0]
            batch = to_device(collate([dataset[i] for i in chunk]), device)
            rc, rr, _ = pair_logps(engine, batch)
            if b * batch_size < len(todo):
                for i, c, r in zip(chunk, rc.tolist(), rr.tolist()):
                    f.write(json.dumps({"index": i, "id": ids[i], "chosen": c, "rejected": r}) + "\n")
                f.flush()
    engine.train(was_training)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    table = torch.full((len(dataset), 2), float("nan"), dtype=torch.float64)
    for path in sorted(out_dir.glob("rank-*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            table[row["index"], 0], table[row["index"], 1] = row["chosen"], row["rejected"]
    missing = int(torch.isnan(table).any(-1).sum())
    if missing:
        raise RuntimeError(
            f"{out_dir}: reference log-probs missing for {missing} records (world size changed?)"
        )
    return table.float()


def all_reduce_max(value: float, device) -> float:
    """The largest ``value`` over the ranks (one process: the value)."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t[0])


def run_dpo(config: Config) -> dict:
    """Run a DPO job (``trainer.train`` with ``DPORecipe``) → the run's summary dict."""
    return train(config, DPORecipe())


__all__ = ["DPORecipe", "pair_logps", "precompute_reference", "run_dpo"]
