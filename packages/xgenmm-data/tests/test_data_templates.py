import pytest
import torch

from xgenmm_data import (
    PHI3_SYSTEM,
    TokenizationMismatch,
    build_prompt,
    encode_conversation,
    get_template,
    tokenize_conversation,
)

README_EXAMPLE = [
    {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
    {"from": "gpt", "value": "The bus in the image is white and red."},
    {"from": "human", "value": "What feature can be seen on the back of the bus?"},
    {"from": "gpt", "value": "The back of the bus features an advertisement."},
]


def test_phi3_training_string_is_byte_exact():
    expected = (
        "<|system|>\nA chat between a curious user and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the user's questions.<|end|>\n<|user|>\n<image>\nWhat are the "
        "colors of the bus in the image?<|end|>\n<|assistant|>\nThe bus in the image is white and red.<|end|>\n"
        "<|user|>\nWhat feature can be seen on the back of the bus?<|end|>\n<|assistant|>\nThe back of the bus "
        "features an advertisement.<|end|>\n"
    )
    assert get_template("phi_3").render(README_EXAMPLE) == expected


def test_phi3_inference_prompt_is_prefix_of_training_string():
    q, a = "<image>\nWhat is this?", "A cat."
    prompt = build_prompt(q)
    assert prompt == f"<|system|>\n{PHI3_SYSTEM}<|end|>\n<|user|>\n{q}<|end|>\n<|assistant|>\n"
    train = get_template("phi_3").render([{"from": "human", "value": q}, {"from": "gpt", "value": a}])
    assert train == prompt + f"{a}<|end|>\n"


def test_explicit_system_turn_is_kept():
    conv = [{"from": "system", "value": "Be brief."}] + README_EXAMPLE[:2]
    assert get_template("phi_3").render(conv).startswith("<|system|>\nBe brief.<|end|>\n<|user|>\n")


def _supervised_text(tokenizer, ids, labels):
    return tokenizer.decode(ids[labels != -100].tolist())


@pytest.mark.parametrize(
    "conv",
    [
        README_EXAMPLE,
        README_EXAMPLE[:2],
        [
            {"from": "human", "value": "Describe the picture."},
            {"from": "gpt", "value": "A cat sits on a red sofa."},
        ],
        [
            {"from": "human", "value": "<image>\nHow many animals?"},
            {"from": "gpt", "value": "Two."},
            {"from": "human", "value": "And in <image> this one?"},
            {"from": "gpt", "value": "Yes, no, maybe."},
            {"from": "human", "value": "What color?"},
            {"from": "gpt", "value": "red"},
        ],
    ],
    ids=["multi-turn-image", "single-turn", "text-only", "multi-image-3-turns"],
)
def test_labels_equal_reference_algorithm(tokenizer, conv, ref_labels):
    """Segment/offset masks == the original's count-and-skip algorithm (`preprocess_phi_3_new`) on a tokenizer
    with rstrip role tokens."""
    ids, labels = tokenize_conversation(conv, tokenizer)
    text = get_template("phi_3").render(conv)
    ref_ids, ref_labels = ref_labels(text, tokenizer)
    assert ids.tolist() == ref_ids
    assert labels.tolist() == ref_labels
    assert (labels != -100).any()
    # supervised = each reply + its <|end|>, nothing else
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    replies = [t["value"] for t in conv if t["from"] == "gpt"]
    assert int((labels == end_id).sum()) == len(replies)
    expected = []
    for r in replies:
        # a reply tokenized in context (after the rstrip role token, which swallows the "\n")
        expected += tokenizer("<|assistant|>\n" + r + "<|end|>", add_special_tokens=False)["input_ids"][1:]
    assert ids[labels != -100].tolist() == expected
    assert "<|assistant|>" not in tokenizer.decode(labels[labels != -100].tolist())


def test_image_token_is_one_masked_id(tokenizer):
    ids, labels = tokenize_conversation(README_EXAMPLE, tokenizer)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert int((ids == image_id).sum()) == 1
    assert labels[ids == image_id].eq(-100).all()


def test_truncation_reports_and_keeps_prefix(tokenizer):
    full = encode_conversation(README_EXAMPLE, tokenizer, max_length=None)
    cut = encode_conversation(README_EXAMPLE, tokenizer, max_length=len(full.input_ids) - 5)
    assert cut.truncated and not full.truncated
    assert cut.num_text_tokens == len(full.input_ids)
    assert torch.equal(cut.input_ids, full.input_ids[:-5])
    assert torch.equal(cut.labels, full.labels[:-5])


def test_plain_template_mismatch_is_reported_not_masked(tokenizer):
    """Without role tokens, the reply can merge with its prefix; that must raise, never be masked silently."""
    from xgenmm_data import ChatTemplate, Segment

    class Glued(ChatTemplate):
        def segments(self, conversations, add_system=True):
            return [Segment("Describe the pic"), Segment("ture.", supervised=True)]

    tmpl = Glued("glued", None, "", "", "", "")
    with pytest.raises(TokenizationMismatch, match="crosses the boundary"):
        encode_conversation([], tokenizer, template=tmpl)


def test_plain_template_works_for_tiny_tokenizers(tokenizer):
    conv = [{"from": "human", "value": "What color?"}, {"from": "gpt", "value": "red"}]
    assert get_template("plain").render(conv) == "User: What color?\nAssistant: red\n"
    ids, labels = tokenize_conversation(conv, tokenizer, template="plain")
    assert tokenizer.decode(ids[labels != -100].tolist()).strip() == "red"


def test_tokenizer_chat_template(tokenizer):
    tok = tokenizer
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    try:
        conv = README_EXAMPLE[:2]
        phi = tokenize_conversation(conv, tok, template="phi_3")
        own = tokenize_conversation(
            [{"from": "system", "value": PHI3_SYSTEM}] + conv, tok, template="tokenizer"
        )
        assert torch.equal(phi[0], own[0]) and torch.equal(phi[1], own[1])
        assert (
            build_prompt("hi", template="tokenizer", tokenizer=tok) == "<|user|>\nhi<|end|>\n<|assistant|>\n"
        )
    finally:
        tok.chat_template = None


def test_unknown_template():
    with pytest.raises(KeyError, match="unknown template"):
        get_template("vicuna")
