"""Reading and writing `XGenMM` checkpoints: transformers' `from_pretrained` / `save_pretrained` with clear errors,
atomic folders, the released (`vlm.*`, HF remote-code) layout and the processor files beside the weights.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import create_repo, upload_folder
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import PrefixChange

from .configuration import write_released_configs
from .files import RELEASED_PREFIX, atomic_directory, check_keys, local_checkpoint, read_json, stored_shapes
from .processing import XGenMMProcessor

# The released snapshots name every tensor "vlm." + ours: transformers renames them on load.
register_checkpoint_conversion_mapping("xgenmm", [PrefixChange(prefix_to_remove=RELEASED_PREFIX.rstrip("."))])


class CheckpointMixin:
    """`XGenMM`'s loading and saving (first base of `XGenMM`, before `PreTrainedModel`, whose methods it wraps)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args, **kwargs):
        """transformers' `from_pretrained` (any of its arguments), with clear errors naming the file and the missing or
        unexpected tensors, and `attn_implementation="sdpa"` by default. Either layout; the released `vlm.*` names
        are renamed on load. A hub id is read from the local cache when offline."""
        local = local_checkpoint(pretrained_model_name_or_path)
        if local is not None:  # config.json, the index, every shard and every header readable
            read_json(local / "config.json")
            stored_shapes(local)
        kwargs.setdefault("attn_implementation", "sdpa")
        want_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except OSError as e:
            if local is not None:
                raise
            raise OSError(
                f"{pretrained_model_name_or_path}: not a local directory and not available from the Hugging Face "
                f"cache ({e}). Download it where there is network (`hf download {pretrained_model_name_or_path}`) "
                "and pass the local directory."
            ) from e
        missing, unexpected = ({k: () for k in info[key]} for key in ("missing_keys", "unexpected_keys"))
        check_keys(missing, unexpected, local or pretrained_model_name_or_path)
        model.vision_encoder.freeze()  # the reference default; the loader made fresh parameters
        return (model, info) if want_info else model

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        tokenizer=None,
        processor=None,
        layout: str = "xgenmm",
        max_shard_size: int | str = "5GB",
        is_main_process: bool = True,
        push_to_hub: bool = False,
        **kwargs,
    ) -> None:
        """A complete hub folder, written atomically (a temporary folder beside it, then renamed): config.json,
        safetensors shards + index, generation_config.json and, given a `processor` (or a `tokenizer` to build
        one), the processor and tokenizer files and the chat template.

        `layout="released"` writes the released (HF remote-code) layout instead: keys `vlm.*`, its config.json and
        preprocessor_config.json. `push_to_hub=True` then uploads the folder (`repo_id=` or the folder name)."""
        if layout not in ("xgenmm", "released"):
            raise ValueError(f"layout must be 'xgenmm' or 'released', got {layout!r}")
        if not is_main_process:
            return
        if processor is None and tokenizer is not None:
            processor = XGenMMProcessor.from_model(self, tokenizer)
        repo_id, message = (
            kwargs.pop("repo_id", Path(save_directory).name),
            kwargs.pop("commit_message", None),
        )
        state_dict = kwargs.pop("state_dict", None)
        if layout == "released":
            state_dict = {RELEASED_PREFIX + k: v for k, v in (state_dict or self.state_dict()).items()}
        with atomic_directory(save_directory) as tmp:
            kwargs.update(state_dict=state_dict, max_shard_size=max_shard_size, save_original_format=False)
            super().save_pretrained(tmp, **kwargs)
            if processor is not None:
                processor.save_pretrained(tmp)
            if layout == "released":
                write_released_configs(self.config, tmp)
        if push_to_hub:
            repo = create_repo(repo_id, exist_ok=True, token=kwargs.get("token")).repo_id
            upload_folder(
                repo_id=repo, folder_path=save_directory, commit_message=message, token=kwargs.get("token")
            )


__all__ = ["CheckpointMixin"]
