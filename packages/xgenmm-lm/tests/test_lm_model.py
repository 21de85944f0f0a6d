import pytest
import torch
import torch.nn.functional as F

from xgenmm_lm import XGenMM

PROMPTS = [
    "<|user|>\n<image>\nWhat is in the image?<|end|>\n<|assistant|>\nA red square.<|end|>\n",
    "<|user|>\nLook at this image <image> and this image <image>. What is in the second image?<|end|>\n",
    "<|user|>\nhello world<|end|>\n<|assistant|>\nthe quick brown fox<|end|>\n",
]


def batch_inputs(model, tokenizer, encode_fn, images, which=(0, 1, 2), padding_side="right"):
    proc = model.image_processor()
    per_prompt = {0: [images[0]], 1: [images[1], images[2]], 2: []}
    texts = [PROMPTS[i] for i in which]
    input_ids, mask = encode_fn(tokenizer, texts, padding_side)
    pixel_values, image_sizes = [], []
    for i in which:
        processed = [proc(img) for img in per_prompt[i]]
        pixel_values.append([p.pixel_values for p in processed])
        image_sizes.append([p.image_size for p in processed])
    labels = input_ids.masked_fill(mask == 0, -100)
    return dict(
        input_ids=input_ids,
        attention_mask=mask,
        pixel_values=pixel_values,
        image_sizes=image_sizes,
        labels=labels,
    )


def test_forward_shapes_loss_and_expanded_outputs(model, tokenizer, encode_fn, images, config):
    inputs = batch_inputs(model, tokenizer, encode_fn, images)
    out = model(**inputs)
    tokens = [model.num_vision_tokens(img.size) for img in images]
    text_lens = inputs["attention_mask"].sum(1).tolist()
    lengths = [text_lens[0] - 1 + tokens[0], text_lens[1] - 2 + tokens[1] + tokens[2], text_lens[2]]
    assert out.logits.shape == (3, max(lengths), config.initial_tokenizer_len + 3)
    assert out.attention_mask.sum(1).tolist() == lengths
    assert (out.labels != -100).sum().item() == (
        inputs["labels"] != -100
    ).sum().item() - 3  # <image> tokens gone
    expected = F.cross_entropy(
        out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), out.labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected)


def test_vision_encoder_once_per_batch_and_not_for_text_only(model, tokenizer, encode_fn, images):
    calls, sampler_calls = [], []
    model.vision_encoder.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    model.vision_tokenizer.register_forward_hook(lambda m, a, o: sampler_calls.append(a[0].shape[0]))
    proc = model.image_processor()
    model(**batch_inputs(model, tokenizer, encode_fn, images))
    assert calls == [sum(proc.num_crops(img.size) for img in images)]
    assert sampler_calls == [sum(proc.num_crops(img.size) for img in images)]
    model(**batch_inputs(model, tokenizer, encode_fn, images, which=(2,)))
    assert len(calls) == 1 and len(sampler_calls) == 1


def test_left_and_right_padding_give_the_same_logits(model, tokenizer, encode_fn, images):
    inputs = batch_inputs(model, tokenizer, encode_fn, images)
    del inputs["labels"]
    right = model.prepare_inputs(**inputs, padding_side="right")
    left = model.prepare_inputs(**inputs, padding_side="left")
    with torch.no_grad():
        lr = model.lang_model(
            inputs_embeds=right.inputs_embeds,
            attention_mask=right.attention_mask,
            position_ids=right.position_ids,
        ).logits
        ll = model.lang_model(
            inputs_embeds=left.inputs_embeds,
            attention_mask=left.attention_mask,
            position_ids=left.position_ids,
        ).logits
        fwd = model(**inputs).logits
    for b in range(3):
        torch.testing.assert_close(
            lr[b][right.attention_mask[b] == 1], ll[b][left.attention_mask[b] == 1], atol=1e-5, rtol=1e-5
        )
    torch.testing.assert_close(fwd, lr)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_equals_unpacked_samples(config, tokenizer, encode_fn, images, attn):
    torch.manual_seed(0)
    model = XGenMM.from_config(config, attn_implementation=attn).eval()
    single = batch_inputs(model, tokenizer, encode_fn, images)
    ids = [single["input_ids"][b][single["attention_mask"][b] == 1] for b in range(3)]
    labs = [single["labels"][b][single["attention_mask"][b] == 1] for b in range(3)]
    # one packed row holding samples 0 and 1 (+2 padding), a second row holding sample 2 alone
    pad = torch.full((2,), tokenizer.pad_token_id)
    row0 = torch.cat([ids[0], ids[1], pad])
    length = row0.shape[0]
    row1 = torch.cat([ids[2], torch.full((length - len(ids[2]),), tokenizer.pad_token_id)])
    seg0 = torch.cat([torch.zeros(len(ids[0])), torch.ones(len(ids[1])), -torch.ones(2)]).long()
    seg1 = torch.cat([torch.zeros(len(ids[2])), -torch.ones(length - len(ids[2]))]).long()
    pos0 = torch.cat([torch.arange(len(ids[0])), torch.arange(len(ids[1])), torch.zeros(2).long()])
    pos1 = torch.cat([torch.arange(len(ids[2])), torch.zeros(length - len(ids[2])).long()])
    segment_ids = torch.stack([seg0, seg1])
    packed = model(
        input_ids=torch.stack([row0, row1]),
        attention_mask=(segment_ids >= 0).long(),
        labels=torch.stack(
            [
                torch.cat([labs[0], labs[1], pad * 0 - 100]),
                torch.cat([labs[2], torch.full((length - len(ids[2]),), -100)]),
            ]
        ),
        pixel_values=[single["pixel_values"][0] + single["pixel_values"][1], []],
        image_sizes=[single["image_sizes"][0] + single["image_sizes"][1], []],
        position_ids=torch.stack([pos0, pos1]),
        segment_ids=segment_ids,
    )
    unpacked = model(**single)
    lens = unpacked.attention_mask.sum(1).tolist()
    torch.testing.assert_close(
        packed.logits[0, : lens[0]], unpacked.logits[0, : lens[0]], atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        packed.logits[0, lens[0] : lens[0] + lens[1]], unpacked.logits[1, : lens[1]], atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        packed.logits[1, : lens[2]], unpacked.logits[2, : lens[2]], atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(packed.loss, unpacked.loss, atol=1e-5, rtol=1e-5)
    # Without the segments, the second sample would see the first: the logits must differ then.
    leaky = model(
        input_ids=row0[None],
        pixel_values=[single["pixel_values"][0] + single["pixel_values"][1]],
        image_sizes=[single["image_sizes"][0] + single["image_sizes"][1]],
    )
    assert not torch.allclose(
        leaky.logits[0, lens[0] : lens[0] + lens[1]], unpacked.logits[1, : lens[1]], atol=1e-3
    )


def test_gradients_reach_sampler_and_lm_not_vision(model, tokenizer, encode_fn, images):
    model.train()
    model(**batch_inputs(model, tokenizer, encode_fn, images)).loss.backward()
    assert all(p.grad is None for p in model.vision_encoder.parameters())
    assert model.vision_tokenizer.latents.grad.abs().sum() > 0
    assert model.vision_tokenizer.projection.weight.grad.abs().sum() > 0
    assert model.lang_model.model.layers[0].self_attn.qkv_proj.weight.grad.abs().sum() > 0
    assert model.lang_model.lm_head.bias.grad.abs().sum() > 0


def test_gradient_checkpointing_same_gradients(model, tokenizer, encode_fn, images):
    model.train()
    inputs = batch_inputs(model, tokenizer, encode_fn, images)
    model(**inputs).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(**inputs).loss.backward()
    for n, p in model.named_parameters():
        if n in ref:
            torch.testing.assert_close(p.grad, ref[n], atol=1e-5, rtol=1e-4)


def test_selective_checkpointing_same_gradients(model, tokenizer, encode_fn, images):
    model.train()
    inputs = batch_inputs(model, tokenizer, encode_fn, images)
    model(**inputs).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable(lm_layers=1)
    layers = model.lang_model.model.layers
    assert [layer.gradient_checkpointing for layer in layers] == [True] + [False] * (len(layers) - 1)
    model(**inputs).loss.backward()
    for n, p in model.named_parameters():
        if n in ref:
            torch.testing.assert_close(p.grad, ref[n], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="decoder layers"):
        model.gradient_checkpointing_enable(lm_layers=len(layers) + 1)
    model.gradient_checkpointing_disable()


def test_set_trainable(model):
    model.set_trainable(vision_encoder=True, vision_tokenizer=False, lang_model=True)
    assert all(p.requires_grad for p in model.vision_encoder.parameters())
    assert not any(p.requires_grad for p in model.vision_tokenizer.parameters())
    model.set_trainable()
    assert not any(p.requires_grad for p in model.vision_encoder.parameters())
    assert all(p.requires_grad for p in model.vision_tokenizer.parameters())
    assert all(p.requires_grad for p in model.lang_model.parameters())


def test_input_errors(model, tokenizer, encode_fn, images):
    inputs = batch_inputs(model, tokenizer, encode_fn, images, which=(0,))
    wrong = dict(inputs, pixel_values=[[inputs["pixel_values"][0][0][:, :, :16]]])
    with pytest.raises(
        ValueError,
        match=r"sample 0, image 0: pixel_values of shape \(3, 3, 16, 32\), expected \(3, 3, 32, 32\)",
    ):
        model(**wrong)
    two = dict(
        inputs, pixel_values=[inputs["pixel_values"][0] * 2], image_sizes=[inputs["image_sizes"][0] * 2]
    )
    with pytest.raises(ValueError, match=r"1 <image> token\(s\) .* but 2 image\(s\)"):
        model(**two)
    with pytest.raises(ValueError, match="image_sizes"):
        model(**dict(inputs, image_sizes=None))
