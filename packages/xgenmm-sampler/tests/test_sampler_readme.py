"""The README's Python snippets run as written (the checkpoint one against a small fake checkpoint)."""

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from xgenmm_sampler import PerceiverResampler

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_example_runs():
    namespace: dict = {}
    with torch.device("meta"):  # full size, but no memory or arithmetic: shapes and the code path only
        exec(python_blocks()[0], namespace)  # asserts the (5, 128, 3072) output shape itself
    assert namespace["tokens"].shape == (5, 128, 3072)
    assert sum(p.numel() for p in namespace["sampler"].parameters()) == 109_901_568


def test_readme_checkpoint_loading_snippet(tiny_config, tmp_path):
    torch.manual_seed(0)
    released = PerceiverResampler.from_config(tiny_config)
    # A sharded HF-style checkpoint: sampler tensors under "vlm.vision_tokenizer.", plus an unrelated tensor.
    tensors = {f"vlm.vision_tokenizer.{k}": v.contiguous() for k, v in released.state_dict().items()}
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    shards["model-00002-of-00002.safetensors"].append("vlm.lang_model.lm_head.bias")
    tensors["vlm.lang_model.lm_head.bias"] = torch.zeros(7)
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / shard))
        weight_map.update(dict.fromkeys(keys, shard))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    code = python_blocks()[1]
    assert 'ckpt_dir = Path("xgen-mm-phi3-mini-instruct-interleave-r-v1.5")' in code
    code = code.replace('Path("xgen-mm-phi3-mini-instruct-interleave-r-v1.5")', f"Path({str(tmp_path)!r})")
    torch.manual_seed(1)
    sampler = PerceiverResampler.from_config(tiny_config)
    exec(code, {"sampler": sampler})
    for name, value in released.state_dict().items():
        torch.testing.assert_close(sampler.state_dict()[name], value, rtol=0, atol=0)
