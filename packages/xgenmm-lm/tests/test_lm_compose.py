"""compose_model: tiny Phi-3, Llama and Qwen2 LMs (and a tiny SigLIP) built in code and saved to folders, each
composed into an XGenMM that trains a step, saves and loads with equal logits."""

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForImageTextToText,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
)

from xgenmm_lm import XGenMM, compose_model, initial_tokenizer_len, train_tiny_tokenizer
from xgenmm_vision import SiglipVisionEncoder

CORPUS = ["a red circle in the top left", "a blue square in the bottom right", "hello world"] * 8


def plain_tokenizer(bos: str | None, eos: str, pad: str | None, vocab_size: int = 120):
    """A BPE tokenizer without any Phi-3 chat token (like Llama's <s>/</s>, or Qwen2's <|endoftext|>)."""
    specials = [t for t in dict.fromkeys([bos, eos, pad]) if t]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = [chr(i) for i in range(32, 127)] + ["▁"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet)
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad)


def lm_cases():
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    llama_tok = plain_tokenizer("<s>", "</s>", None)
    qwen_tok = plain_tokenizer(None, "<|endoftext|>", "<|endoftext|>")  # pads with eos: gets a <pad>
    phi_tok = train_tiny_tokenizer(CORPUS, vocab_size=150)
    # Llama: a table exactly as long as its tokenizer (like Llama 3), so <pad> + 3 tokens need a resize.
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(llama_tok), num_key_value_heads=2, **small))
    # Qwen2: tied input/output embeddings, a table longer than the tokenizer.
    qwen = Qwen2ForCausalLM(
        Qwen2Config(vocab_size=256, tie_word_embeddings=True, num_key_value_heads=2, **small)
    )
    phi = Phi3ForCausalLM(Phi3Config(vocab_size=256, num_key_value_heads=4, pad_token_id=0, **small))
    return {"phi3": (phi, phi_tok), "llama": (llama, llama_tok), "qwen2": (qwen, qwen_tok)}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    vision = SiglipVisionEncoder.from_config(
        SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    )
    vision.save_pretrained(root / "siglip")
    folders = {}
    for name, (lm, tok) in lm_cases().items():
        lm.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        folders[name] = root / name
    return root / "siglip", folders


def _batch(model, tokenizer):
    image = Image.new("RGB", (64, 32), (200, 30, 30))
    pixels, size = model.image_processor()(image).pixel_values, image.size
    ids = tokenizer("<image>a red circle" + tokenizer.eos_token)["input_ids"]
    input_ids = torch.tensor([ids])
    labels = input_ids.masked_fill(input_ids == model.config.media_token_id, -100)
    return dict(input_ids=input_ids, labels=labels, pixel_values=[[pixels]], image_sizes=[[size]])


@pytest.mark.parametrize("name", ["phi3", "llama", "qwen2"])
def test_compose_trains_saves_and_loads(parts, name, tmp_path):
    siglip, folders = parts
    torch.manual_seed(0)
    model, tokenizer = compose_model(
        folders[name], siglip, num_latents=8, sampler={"depth": 1, "heads": 2, "dim_head": 16}
    )
    n = initial_tokenizer_len(tokenizer)
    assert tokenizer.convert_ids_to_tokens([n, n + 1, n + 2]) == [
        "<image>",
        "<image placeholder>",
        "<|endofchunk|>",
    ]
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token != tokenizer.eos_token
    assert model.config.sampler_config.num_latents == 8
    assert (model.config.sampler_config.dim, model.config.sampler_config.dim_inner) == (32, 64)

    # the pretrained weights are the loaded ones
    lm_ref = type(model.lang_model).from_pretrained(folders[name])
    emb = model.lang_model.get_input_embeddings()
    rows = lm_ref.get_input_embeddings().weight.shape[0]
    torch.testing.assert_close(emb.weight[:rows], lm_ref.get_input_embeddings().weight)
    torch.testing.assert_close(
        model.lang_model.model.layers[1].mlp.down_proj.weight, lm_ref.model.layers[1].mlp.down_proj.weight
    )
    vision_ref = SiglipVisionEncoder.from_pretrained(siglip)
    for (k, a), (_, b) in zip(model.vision_encoder.state_dict().items(), vision_ref.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    if name == "llama":  # the table grew to hold <pad> and kept a multiple of 64 rows
        assert emb.weight.shape[0] % 64 == 0 and emb.weight.shape[0] >= n
    if name == "qwen2":
        assert model.lang_model.get_output_embeddings().weight is emb.weight  # still tied

    # one training step moves the perceiver and the LM, not the frozen vision tower
    model.train()
    frozen = {k: v.clone() for k, v in model.vision_encoder.state_dict().items()}
    before = [p.detach().clone() for p in model.vision_tokenizer.parameters()]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(**_batch(model, tokenizer)).loss
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.vision_tokenizer.parameters()))
    assert all(torch.equal(v, model.vision_encoder.state_dict()[k]) for k, v in frozen.items())

    model.eval()
    batch = _batch(model, tokenizer)
    with torch.no_grad():
        want = model(**batch).logits
    model.save_pretrained(tmp_path / "composed", tokenizer=tokenizer)
    for loaded in (
        XGenMM.from_pretrained(tmp_path / "composed"),
        AutoModelForImageTextToText.from_pretrained(tmp_path / "composed"),
    ):
        assert type(loaded.lang_model) is type(model.lang_model)
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(**batch).logits, want)


def test_compose_refuses_open_clip(parts):
    siglip, folders = parts
    with pytest.raises(NotImplementedError, match="SigLIP vision towers only"):
        compose_model(folders["phi3"], "open_clip:ViT-B-16")


def test_base_resolution_image_is_one_group(model, tokenizer, images):
    """A single (1, 3, S, S) crop is a base-resolution image: num_latents LM positions, the base crop's features."""
    anyres = model.image_processor()(images[1])
    base = anyres.pixel_values[:1]
    tokens = model.encode_images([[base], [anyres.pixel_values]], [[images[1].size], [images[1].size]])
    latents = model.config.sampler_config.num_latents
    assert tokens[0][0].shape == (latents, model.config.text_config.hidden_size)
    assert tokens[1][0].shape[0] == latents * anyres.pixel_values.shape[0]
    torch.testing.assert_close(tokens[0][0], tokens[1][0][:latents])  # the base group of the anyres image
