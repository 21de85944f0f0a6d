"""The transformers-native model: Auto classes, processor, big-model loading, quantization, fast generation, peft."""

import json
import shutil

import pytest
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    CompileConfig,
    PreTrainedConfig,
    PreTrainedModel,
)

from xgenmm_lm import PHI3_CHAT_TEMPLATE, XGenMM, XGenMMConfig, XGenMMImageProcessor, XGenMMProcessor

SPEC_CONVERSATION = (
    "<|system|>\nA chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions.<|end|>\n<|user|>\n<image>\nWhat are the colors "
    "of the bus in the image?<|end|>\n<|assistant|>\nThe bus in the image is white and red.<|end|>\n<|user|>\n"
    "What feature can be seen on the back of the bus?<|end|>\n<|assistant|>\nThe back of the bus features an "
    "advertisement.<|end|>\n"
)
QUESTION = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}
]
TWO_IMAGES = [
    {
        "role": "user",
        "content": [
            {"type": "image"},
            {"type": "image"},
            {"type": "text", "text": "What is in the second image?"},
        ],
    }
]
TEXT_ONLY = [{"role": "user", "content": "hello world"}]


@pytest.fixture
def processor(model, tokenizer):
    return XGenMMProcessor.from_model(model, tokenizer)


@pytest.fixture
def batch(processor, images):
    """Three prompts: one image, two images, text only."""
    prompts = [
        processor.apply_chat_template(m, add_generation_prompt=True)
        for m in (QUESTION, TWO_IMAGES, TEXT_ONLY)
    ]
    return processor(text=prompts, images=[[images[0]], [images[1], images[2]], []])


@pytest.fixture
def saved(model, tokenizer, tmp_path):
    out = tmp_path / "ckpt"
    model.save_pretrained(out, tokenizer=tokenizer)
    return out


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_native_classes_and_config_round_trip(model, config, tmp_path):
    assert isinstance(model, PreTrainedModel) and isinstance(config, PreTrainedConfig)
    assert model.can_generate() and config.model_type == "xgenmm"
    assert {"vision_config", "text_config"} <= set(XGenMMConfig.sub_configs)
    config.save_pretrained(tmp_path)
    back = XGenMMConfig.from_pretrained(tmp_path)
    assert back.to_dict() == config.to_dict()
    assert back.sampler_config == config.sampler_config and back.text_config.hidden_size == 64
    assert isinstance(AutoConfig.from_pretrained(tmp_path), XGenMMConfig)


def test_chat_template_is_the_phi3_sft_string(processor):
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What are the colors of the bus in the image?"}]},
        {"role": "assistant", "content": "The bus in the image is white and red."},
        {"role": "user", "content": "What feature can be seen on the back of the bus?"},
        {"role": "assistant", "content": "The back of the bus features an advertisement."},
    ]  # fmt: skip
    assert processor.apply_chat_template(conversation) == SPEC_CONVERSATION
    prompt = processor.apply_chat_template(conversation[:1], add_generation_prompt=True)
    assert prompt == SPEC_CONVERSATION.split("<|assistant|>")[0] + "<|assistant|>\n"
    system = [{"role": "system", "content": "Be brief."}, *TEXT_ONLY]
    assert (
        processor.apply_chat_template(system)
        == "<|system|>\nBe brief.<|end|>\n<|user|>\nhello world<|end|>\n"
    )


def test_processor_outputs_feed_forward_and_generate(model, processor, batch, images, tokenizer):
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "image_sizes"}
    assert [len(p) for p in batch["pixel_values"]] == [1, 2, 0]
    anyres = model.image_processor()
    for got, image in zip([*batch["pixel_values"][0], *batch["pixel_values"][1]], images):
        assert torch.equal(got, anyres(image).pixel_values)  # the same pixels, bit for bit
    assert batch["image_sizes"][1] == [list(images[1].size), list(images[2].size)]

    out = logits(model, batch)
    new = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert new.shape == (3, 6)
    for b in range(3):  # each row equals the same sample run alone
        single = {k: v[b : b + 1] for k, v in batch.items()}
        real = batch["attention_mask"][b].sum()
        alone = processor(
            text=[tokenizer.decode(batch["input_ids"][b, :real])], images=[batch_images(images, b)]
        )
        assert torch.equal(alone["input_ids"], single["input_ids"][:, :real])
        one = logits(model, alone)
        torch.testing.assert_close(out[b : b + 1, : one.shape[1]], one, atol=1e-5, rtol=1e-5)
        assert torch.equal(
            model.generate(**alone, max_new_tokens=6, min_new_tokens=6, do_sample=False), new[b : b + 1]
        )


def batch_images(images, b):
    return [[images[0]], [images[1], images[2]], []][b]


def test_processor_errors_and_save_load(processor, tmp_path, images):
    with pytest.raises(ValueError, match=r"1 <image> token\(s\) in the texts but 2 image\(s\)"):
        processor(text=["<image> a"], images=images[:2])
    with pytest.raises(ValueError, match=r"text 1: 1 <image> token\(s\) but 0 image\(s\)"):
        processor(text=["<image> a", "<image> b"], images=[[images[0]], []])
    processor.save_pretrained(tmp_path)
    back = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(back, XGenMMProcessor) and isinstance(back.image_processor, XGenMMImageProcessor)
    assert back.chat_template == PHI3_CHAT_TEMPLATE
    assert back.image_processor.grids == processor.image_processor.grids
    a, b = processor(text=["<image> a"], images=[images[1]]), back(text=["<image> a"], images=[images[1]])
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(
        a["pixel_values"][0][0], b["pixel_values"][0][0]
    )


def test_auto_classes_load_both_layouts(model, tokenizer, batch, tmp_path):
    reference = logits(model, batch)
    auto_classes = [AutoModelForImageTextToText]
    if hasattr(transformers, "AutoModelForVision2Seq"):
        auto_classes.append(transformers.AutoModelForVision2Seq)
    for layout in ("xgenmm", "released"):
        folder = tmp_path / layout
        model.save_pretrained(folder, tokenizer=tokenizer, layout=layout)
        stored = json.loads((folder / "config.json").read_text())
        assert ("vision_encoder_config" in stored) == (layout == "released")
        assert isinstance(AutoConfig.from_pretrained(folder), XGenMMConfig)
        processor = AutoProcessor.from_pretrained(folder)
        assert isinstance(processor, XGenMMProcessor)
        for auto in auto_classes:
            loaded = auto.from_pretrained(folder)
            assert type(loaded) is XGenMM
            assert torch.equal(logits(loaded, batch), reference), (layout, auto.__name__)


def test_hub_folder_is_complete_and_self_contained(model, saved, batch, tmp_path):
    names = {p.name for p in saved.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "processor_config.json"} <= names  # fmt: skip
    assert not [
        p for p in saved.parent.iterdir() if p.name.startswith(".")
    ]  # no temporary folder left behind
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(saved, moved)
    loaded = AutoModelForImageTextToText.from_pretrained(moved)
    processor = AutoProcessor.from_pretrained(moved)
    assert loaded.generation_config.eos_token_id == model.config.eos_token_id
    assert torch.equal(logits(loaded, batch), logits(model, batch))
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == model.config.media_token_id


def test_checkpoint_of_the_previous_version_loads(model, tokenizer, batch, tmp_path):
    """xgenmm-lm 0.1 wrote its own config.json ("format": "xgenmm-lm"), numbered shards and no processor files."""
    old = tmp_path / "old"
    model.save_pretrained(old, max_shard_size=20_000)
    tokenizer.save_pretrained(old)
    cfg = model.config
    (old / "config.json").write_text(json.dumps({
        "format": "xgenmm-lm", "model_type": "xgenmm", "vision_config": cfg.vision_config.to_dict(),
        "text_config": cfg.text_config.to_dict(), "sampler_config": cfg.sampler_config.to_dict(),
        "anyres_grids": cfg.anyres_grids, "initial_tokenizer_len": cfg.initial_tokenizer_len,
        "pad_token_id": cfg.pad_token_id, "eos_token_id": cfg.eos_token_id, "bos_token_id": cfg.bos_token_id,
        "regroup_mode": cfg.regroup_mode, "image_mean": cfg.image_mean, "image_std": cfg.image_std, "dtype": None,
    }))  # fmt: skip
    (old / "generation_config.json").unlink()
    loaded = AutoModelForImageTextToText.from_pretrained(old)
    processor = AutoProcessor.from_pretrained(old)  # image processor built from config.json
    assert processor.image_processor.grids == cfg.anyres_grids
    assert torch.equal(logits(loaded, batch), logits(model, batch))


def test_device_map_offload_gives_the_same_logits(model, saved, batch, tmp_path):
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    offloaded = XGenMM.from_pretrained(
        saved, device_map="auto", max_memory={"cpu": size // 3}, offload_folder=str(tmp_path / "offload")
    )
    assert {"cpu", "disk"} <= set(offloaded.hf_device_map.values())  # over budget: part of it lives on disk
    assert any(p.device.type == "meta" for p in offloaded.parameters())
    assert torch.equal(logits(offloaded, batch), logits(model, batch))
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert torch.equal(offloaded.generate(**batch, **kwargs), model.generate(**batch, **kwargs))


def test_dtype_auto_and_attn_implementation(model, tmp_path, batch):
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert (
        XGenMM.from_pretrained(tmp_path / "bf16", dtype="auto").lang_model.lm_head.weight.dtype
        == torch.bfloat16
    )
    assert XGenMM.from_pretrained(tmp_path / "bf16", dtype=torch.float32).dtype == torch.float32
    model.to(torch.float32).save_pretrained(tmp_path / "fp32")
    reference = logits(model, batch)
    for attn in ("eager", "sdpa", "sdpa_varlen"):
        loaded = XGenMM.from_pretrained(tmp_path / "fp32", attn_implementation=attn)
        assert loaded.lang_model.config._attn_implementation == attn
        torch.testing.assert_close(
            logits(loaded, batch), reference, atol=1e-4, rtol=1e-4
        )  # fp32 kernels differ


def test_static_cache_gives_the_dynamic_cache_tokens(model, batch):
    kwargs = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False)
    dynamic = model.generate(**batch, **kwargs)
    static = model.generate(**batch, cache_implementation="static", **kwargs)
    assert torch.equal(static, dynamic)


@pytest.mark.slow
def test_compiled_static_decode_gives_the_same_tokens(model, batch):
    kwargs = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False)
    dynamic = model.generate(**batch, **kwargs)
    compile_config = CompileConfig(mode="default")
    compile_config._compile_all_devices = True  # transformers compiles on GPUs only unless told (a CPU test)
    compiled = model.generate(**batch, cache_implementation="static", compile_config=compile_config, **kwargs)
    assert hasattr(model.lang_model, "_compiled_call")  # the decode step ran under torch.compile
    assert torch.equal(compiled, dynamic)


def test_int8_weight_only_quantized_load(model, saved, batch):
    torchao = pytest.importorskip("torchao")  # a dev dependency; the `quantization` extra
    from transformers import TorchAoConfig

    quantized = XGenMM.from_pretrained(
        saved, quantization_config=TorchAoConfig(torchao.quantization.Int8WeightOnlyConfig())
    )
    weight = quantized.lang_model.model.layers[0].mlp.down_proj.weight
    assert type(weight).__name__ == "Int8Tensor"  # really quantized
    reference, got = logits(model, batch), logits(quantized, batch)
    # Tolerance: int8 per-channel weights move a logit by at most 2 % of the largest logit (measured 0.9 %).
    assert (got - reference).abs().max() <= 0.02 * reference.abs().max()


def test_peft_lora_on_the_native_model(model, batch, tmp_path):
    peft = pytest.importorskip("peft")
    model.save_pretrained(tmp_path / "base")
    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj"])
    )
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.5)
    lora.train()
    for _ in range(2):
        loss = lora(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    lora.eval()
    tuned = logits(lora, batch)
    lora.save_pretrained(tmp_path / "adapter")
    with lora.disable_adapter():
        plain = logits(lora, batch)
    assert not torch.equal(tuned, plain)
    fresh = peft.PeftModel.from_pretrained(XGenMM.from_pretrained(tmp_path / "base"), tmp_path / "adapter")
    torch.testing.assert_close(logits(fresh, batch), tuned)
