"""Process-group and DeepSpeed engine set-up, shared by SFT and DPO, on GPUs and on the CPU.

One process without a launcher gets ``RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1`` and a free
``MASTER_PORT``; under ``torchrun``/``deepspeed`` those come from the launcher. The backend is NCCL on CUDA and
gloo on the CPU. On the CPU, DeepSpeed's shared-memory all-reduce op would be JIT-compiled on first use (~40 s);
it is only a speed-up for multi-process CPU runs, so it is skipped unless ``XGENMM_DS_SHM=1``.

DeepSpeed is imported where it is used (here and in ``modeling.save_weights``), not at the top: the import takes
about 2 s even with torch loaded (measured 2.1 s on 2 cores) and logs an accelerator line, which every
``import xgenmm_train``, ``xgenmm-train --help`` and ``--print-config`` would pay.
"""

from __future__ import annotations

import importlib
import math
import os
import socket

import torch

from .config import Config


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _skip_shm_build() -> None:
    # `import deepspeed.comm.torch as m` would bind the `torch` package re-exported by deepspeed.comm.
    ds_comm_torch = importlib.import_module("deepspeed.comm.torch")
    ds_comm_torch.build_shm_op = lambda: None


def init_distributed() -> tuple[int, int, torch.device]:
    """Initialise torch.distributed through DeepSpeed → (rank, world_size, device)."""
    import deepspeed  # on use: see the module docstring
    from deepspeed.accelerator import get_accelerator

    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
    accel = get_accelerator()
    on_cpu = accel.device_name() == "cpu"
    if on_cpu and os.environ.get("XGENMM_DS_SHM") != "1":
        _skip_shm_build()
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo" if on_cpu else accel.communication_backend_name())
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cpu") if on_cpu else torch.device(accel.device_name(), local_rank)
    if not on_cpu:
        accel.set_device(local_rank)
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), device


def deepspeed_config(config: Config, world_size: int) -> dict:
    """The DeepSpeed JSON config for a :class:`Config` (optimizer and scheduler are passed as torch objects)."""
    t, ds = config.train, config.deepspeed
    zero: dict = {"stage": ds.zero_stage}
    if ds.zero_stage > 0:
        zero.update(overlap_comm=False, contiguous_gradients=True, reduce_scatter=True)
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    out = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": t.micro_batch_size * t.grad_accum * world_size,
        "gradient_clipping": t.clip_grad,
        "zero_optimization": zero,
        "bf16": {"enabled": t.precision == "bf16"},
        "fp16": {"enabled": t.precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if ds.offload_optimizer:
        out["zero_force_ds_cpu_optimizer"] = False
    return _deep_merge(out, ds.extra)


def _deep_merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def lr_lambda(step: int, warmup: int, total: int, kind: str, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at optimizer step ``step``: linear warm-up then cosine/linear decay/constant."""
    if step < warmup:
        return (step + 1) / (warmup + 1) if warmup > 0 else 1.0
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * decay


def param_groups(params: list, max_elements: int) -> list[dict]:
    """``params`` in order, cut into groups of at most ``max_elements`` elements (a larger tensor gets a group
    of its own); ``max_elements`` 0 = one group. Every group has the same hyper-parameters."""
    if max_elements <= 0:
        return [{"params": list(params)}]
    groups, current, size = [], [], 0
    for p in params:
        if current and size + p.numel() > max_elements:
            groups.append({"params": current})
            current, size = [], 0
        current.append(p)
        size += p.numel()
    if current:
        groups.append({"params": current})
    return groups


def build_optimizer(params: list, config: Config) -> torch.optim.Optimizer:
    """AdamW over ``params`` (the same hyper-parameters for all, as the original; param groups of at most
    ``train.optimizer_group_params`` elements, see ``param_groups``), the implementation chosen by
    ``train.optimizer``.

    "adamw": torch AdamW, ``fused=True`` when the parameters are on a GPU: one kernel per step and no
    temporaries, where the multi-tensor form ("adamw_foreach") allocates several state-sized buffers (under
    ZeRO the state is one flat tensor per param group, so each buffer is 4 bytes × its elements).
    "deepspeed_adam": DeepSpeed's FusedAdam (GPU only; the op is JIT-compiled on first use).
    ``deepspeed.offload_optimizer``: DeepSpeedCPUAdam whatever ``train.optimizer`` says.
    """
    t = config.train
    kwargs = dict(lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay)
    on_gpu = all(p.device.type == "cuda" for p in params)
    params = param_groups(params, t.optimizer_group_params)
    if config.deepspeed.offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # on use: see the module docstring

        return DeepSpeedCPUAdam(params, **kwargs)
    if t.optimizer == "deepspeed_adam":
        if not on_gpu:
            raise ValueError("train.optimizer=deepspeed_adam needs the parameters on a CUDA GPU")
        from deepspeed.ops.adam import FusedAdam  # on use: see the module docstring

        return FusedAdam(params, adam_w_mode=True, **kwargs)
    if t.optimizer == "adamw_foreach":
        return torch.optim.AdamW(params, foreach=True, **kwargs)
    return torch.optim.AdamW(params, fused=True if on_gpu else None, **kwargs)


def build_engine(model: torch.nn.Module, config: Config, world_size: int, total_steps: int):
    """Wrap ``model`` in a DeepSpeed engine with AdamW (``build_optimizer``) and the lr schedule."""
    import deepspeed  # on use: see the module docstring

    t = config.train
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: check model.train_* and lora.* in the config")
    optimizer = build_optimizer(params, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, t.warmup_steps, total_steps, t.lr_scheduler, t.min_lr_ratio)
    )
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(config, world_size),
    )
    return engine, optimizer, scheduler


__all__ = [
    "build_engine",
    "build_optimizer",
    "deepspeed_config",
    "free_port",
    "init_distributed",
    "lr_lambda",
]
