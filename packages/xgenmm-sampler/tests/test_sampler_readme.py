"""Every block and command of the package README runs as written (the checkpoint snippet against a small fake
checkpoint); the `readme` fixture is the repository's conftest.py."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from xgenmm_sampler import PerceiverResampler

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_command_of_the_readme_is_run_below(readme):
    doc = readme.open(README)
    assert doc.sections_with_commands() == ["Install alone", "Tests"]
    assert len(doc.commands()) == 2 and len(doc.python()) == 2


def test_readme_example_runs(readme):
    namespace: dict = {}
    with torch.device("meta"):  # full size, but no memory or arithmetic: shapes and the code path only
        exec(readme.open(README).python()[0], namespace)  # asserts the (5, 128, 3072) output shape itself
    assert namespace["tokens"].shape == (5, 128, 3072)
    assert sum(p.numel() for p in namespace["sampler"].parameters()) == 109_901_568


def test_readme_checkpoint_loading_snippet(readme, tiny_config, tmp_path):
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

    code = readme.open(README).python()[1]
    assert 'ckpt_dir = Path("xgen-mm-phi3-mini-instruct-interleave-r-v1.5")' in code
    code = code.replace('Path("xgen-mm-phi3-mini-instruct-interleave-r-v1.5")', f"Path({str(tmp_path)!r})")
    torch.manual_seed(1)
    sampler = PerceiverResampler.from_config(tiny_config)
    exec(code, {"sampler": sampler})
    for name, value in released.state_dict().items():
        torch.testing.assert_close(sampler.state_dict()[name], value, rtol=0, atol=0)


@pytest.mark.slow  # a fresh virtual environment and a wheel build (~15 s)
def test_install_command_installs_the_package_alone(readme, tmp_path):
    (command,) = readme.open(README).commands("Install alone")
    python = readme.pip_install(command, tmp_path / "venv")
    assert readme.imported_from(python, ["xgenmm_sampler"])["xgenmm_sampler"].startswith(str(tmp_path))


def test_tests_command_is_what_ci_runs(readme):
    (command,) = readme.open(README).commands("Tests")
    assert readme.expand(command, readme.ROOT) == readme.ci_package_tests("xgenmm-sampler")
