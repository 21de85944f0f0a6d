"""VLMEvalKit bridge: prompt string, images handed to generation, and the CLI without VLMEvalKit."""

import importlib.util
import time

import pytest

import xgenmm_lm.inference
from xgenmm_eval import cli, vlmevalkit
from xgenmm_eval.vlmevalkit import VLMEvalKitMissing, vlm_class

HAVE_VLMEVAL = importlib.util.find_spec("vlmeval") is not None

SYSTEM = (
    "<|system|>\nA chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions.<|end|>\n"
)


class StandInBaseModel:
    """Stand-in for `vlmeval.vlm.base.BaseModel` (used only when VLMEvalKit is not importable): the parts of its
    contract that `infer_data` relies on. `generate(message, dataset)` normalises a str message, checks the
    item types and calls `generate_inner`; `set_dump_image` stores the dataset's image dumper."""

    INTERLEAVE = False
    allowed_types = ["text", "image"]

    def __init__(self):
        self.dump_image_func = None

    def set_dump_image(self, dump_image_func):
        self.dump_image_func = dump_image_func

    def use_custom_prompt(self, dataset):
        return False

    def generate(self, message, dataset=None):
        if isinstance(message, str):
            message = [{"type": "text", "value": message}]
        for item in message:
            assert item["type"] in self.allowed_types, item
        return self.generate_inner(message, dataset)


@pytest.fixture(scope="module")
def vlm(tiny_model):
    base = None if HAVE_VLMEVAL else StandInBaseModel
    model, tokenizer = tiny_model
    return vlm_class(base)(model=model, tokenizer=tokenizer, max_new_tokens=6)


def test_class_follows_vlmevalkit_interface(vlm):
    if HAVE_VLMEVAL:
        from vlmeval.vlm.base import BaseModel

        assert isinstance(vlm, BaseModel)
    assert type(vlm).INTERLEAVE is True and type(vlm).__name__ == "XGenMMVLM"
    assert vlm.use_custom_prompt("MMBench_DEV_EN") is False
    vlm.set_dump_image(lambda line: ["x.jpg"])  # called by infer_data before the first sample
    assert vlm.dump_image_func({}) == ["x.jpg"]


def test_prompt_string_for_interleaved_message(vlm, image_files):
    msg = [
        {"type": "text", "value": "Compare "},
        {"type": "image", "value": str(image_files[0])},
        {"type": "text", "value": "and"},
        {"type": "image", "value": str(image_files[2])},
        {"type": "text", "value": "Which is wider?"},
    ]
    prompt, images = vlm.build_inputs(msg)
    assert prompt == SYSTEM + "<|user|>\nCompare <image> and<image> Which is wider?<|end|>\n<|assistant|>\n"
    assert images == [str(image_files[0]), str(image_files[2])]
    ids = vlm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(vlm.tokenizer.convert_tokens_to_ids("<image>")) == 2


def test_generate_passes_images_in_message_order(vlm, image_files, monkeypatch):
    seen = {}
    real = xgenmm_lm.inference.generate_texts

    def spy(model, tokenizer, prompts, images, **kw):
        seen.update(prompts=prompts, images=images, kw=kw)
        return real(model, tokenizer, prompts, images, **kw)

    monkeypatch.setattr(vlmevalkit, "generate_texts", spy)
    msg = [
        {"type": "image", "value": str(image_files[1])},
        {"type": "text", "value": "Describe"},
        {"type": "image", "value": str(image_files[0])},
    ]
    answer = vlm.generate(msg, dataset="MMBench_DEV_EN")
    assert [im.size for im in seen["images"][0]] == [(20, 60), (40, 30)]
    assert all(im.mode == "RGB" for im in seen["images"][0])
    assert seen["prompts"][0].endswith("<|user|>\n<image> Describe<image> <|end|>\n<|assistant|>\n")
    assert seen["kw"]["max_new_tokens"] == 6
    # the same prompt and images through the library function give the same (greedy) answer
    monkeypatch.setattr(vlmevalkit, "generate_texts", real)
    assert answer == real(vlm.model, vlm.tokenizer, seen["prompts"], seen["images"], max_new_tokens=6)[0]
    assert "<|end|>" not in answer


def test_generate_batch_matches_single(vlm, image_files):
    msgs = [
        [{"type": "image", "value": str(image_files[0])}, {"type": "text", "value": "What colour?"}],
        [{"type": "text", "value": "No image here."}],
    ]
    batched = vlm.generate_batch(msgs, batch_size=2)
    assert batched == [vlm.generate(m) for m in msgs]


@pytest.mark.skipif(HAVE_VLMEVAL, reason="VLMEvalKit is installed")
def test_missing_vlmevalkit_says_how_to_install(capsys, tmp_path):
    with pytest.raises(VLMEvalKitMissing, match="git clone"):
        vlm_class()
    start = time.perf_counter()
    rc = cli.main(["vlmevalkit", "--model", str(tmp_path / "no-such-ckpt"), "--data", "MMBench_DEV_EN"])
    assert rc == 2 and time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert "VLMEvalKit is not installed" in err and "pip install -e VLMEvalKit" in err
    assert "checkpoint" not in err  # failed before touching the model


def test_prediction_file_finds_the_pkl_vlmevalkit_falls_back_to(tmp_path, caplog, monkeypatch):
    """VLMEvalKit's `dump` writes `<name>.pkl` when it cannot write `<name>.xlsx` (xlsxwriter missing): scoring
    must use that file, and with no file at all the error names what is missing."""
    from xgenmm_eval import vlmevalkit

    monkeypatch.delenv("PRED_FORMAT", raising=False)
    monkeypatch.setattr(vlmevalkit, "xlsx_writer_missing", lambda: True)  # as in an env without xlsxwriter
    stem = tmp_path / "xgenmm-tiny_MMBench_DEV_EN"
    with pytest.raises(FileNotFoundError) as err:
        vlmevalkit.prediction_file(tmp_path, "xgenmm-tiny", "MMBench_DEV_EN")
    assert str(err.value) == (
        f"VLMEvalKit's inference left no prediction file: neither {stem}.xlsx nor {stem}.pkl; writing .xlsx "
        "needs the xlsxwriter package: pip install xlsxwriter (or set PRED_FORMAT=tsv)"
    )
    (tmp_path / f"{stem.name}.pkl").write_bytes(b"")
    assert vlmevalkit.prediction_file(tmp_path, "xgenmm-tiny", "MMBench_DEV_EN") == f"{stem}.pkl"
    assert f"could not write {stem}.xlsx and wrote {stem}.pkl instead" in caplog.text
    assert "pip install xlsxwriter" in caplog.text
    (tmp_path / f"{stem.name}.xlsx").write_bytes(b"")
    assert vlmevalkit.prediction_file(tmp_path, "xgenmm-tiny", "MMBench_DEV_EN") == f"{stem}.xlsx"
