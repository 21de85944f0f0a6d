"""A saved LoRA adapter names its base checkpoint, and the README's loading snippet runs as written."""

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from xgenmm_train.sft import run_sft

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_snippet() -> str:
    section = README.read_text().split("## Loading a LoRA adapter", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_adapter_records_its_base_and_loads_as_documented(tmp_path, synth, make_config, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the README's relative run folder
    lora = {"lora.enabled": "true", "lora.r": 4, "lora.dropout": 0.0, "train.max_steps": 2}
    run_sft(make_config("runs/lora", synth["mixture"], **lora))
    adapter = tmp_path / "runs" / "lora" / "checkpoints" / "step-000002" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tmp_path / "runs" / "lora" / "init")  # was None

    scope = {}
    exec(compile(_readme_snippet(), str(README), "exec"), scope)
    model, tokenizer = scope["model"], scope["tokenizer"]
    saved = {k: v for k, v in load_file(adapter / "adapter_model.safetensors").items() if "lora_" in k}
    loaded = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    assert sorted(loaded) == sorted(saved) and saved
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)  # trained, not the zero init
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert tokenizer.convert_tokens_to_ids("<image>") != tokenizer.unk_token_id


def test_base_checkpoint_of_a_pretrained_start(tmp_path, make_config, monkeypatch):
    from xgenmm_train.modeling import base_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpts" / "base").mkdir(parents=True)
    config = make_config("run", "data.json", **{"model.init": "pretrained", "model.path": "ckpts/base"})
    assert base_checkpoint(config) == str(tmp_path / "ckpts" / "base")  # absolute: loadable from anywhere
    assert base_checkpoint(make_config("run", "data.json")) == str(tmp_path / "run" / "init")
