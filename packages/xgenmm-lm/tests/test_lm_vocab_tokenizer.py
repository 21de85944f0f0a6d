import torch
from transformers import LlamaConfig, LlamaForCausalLM

from xgenmm_lm import (
    DecoupledEmbedding,
    DecoupledLinear,
    add_special_tokens,
    extend_vocabulary,
    initial_tokenizer_len,
    stop_token_ids,
)


def test_decoupled_embedding_and_head_on_another_causal_lm():
    torch.manual_seed(0)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    original = lm.get_input_embeddings().weight
    extend_vocabulary(lm, initial_tokenizer_len=100)
    emb, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    assert isinstance(emb, DecoupledEmbedding) and isinstance(head, DecoupledLinear)
    assert emb.weight is original
    keys = set(lm.state_dict())
    assert {
        "model.embed_tokens.additional_embedding.weight",
        "lm_head.bias",
        "lm_head.additional_fc.weight",
        "lm_head.additional_fc.bias",
    } <= keys
    ids = torch.tensor([[5, 99, 100, 101, 102]])
    out = emb(ids)
    torch.testing.assert_close(out[0, 0], original[5])
    torch.testing.assert_close(out[0, 1], original[99])
    torch.testing.assert_close(out[0, 2:], emb.additional_embedding.weight)  # ids 100..102 → extra rows 0..2
    h = torch.randn(1, 3, 32)
    logits = head(h)
    assert logits.shape == (1, 3, 103)
    torch.testing.assert_close(logits[..., :100], h @ head.weight[:100].T + head.bias[:100])
    torch.testing.assert_close(logits[..., 100:], h @ head.additional_fc.weight.T + head.additional_fc.bias)
    assert lm(input_ids=ids).logits.shape == (1, 5, 103) and lm.config.vocab_size == 103


def test_tiny_tokenizer_layout(tokenizer):
    n = initial_tokenizer_len(tokenizer)
    ids = tokenizer.convert_tokens_to_ids(
        [
            "<|endoftext|>",
            "<|assistant|>",
            "<|system|>",
            "<|end|>",
            "<|user|>",
            "<pad>",
            "<image>",
            "<image placeholder>",
            "<|endofchunk|>",
        ]
    )
    e = ids[0]
    assert ids == [e, e + 1, e + 6, e + 7, e + 10, e + 11, n, n + 1, n + 2] and n == e + 12
    assert len(tokenizer) == n + 3 and tokenizer.pad_token_id == e + 11 and tokenizer.eos_token_id == e
    assert stop_token_ids(tokenizer) == [e, e + 7]
    # rstrip on role tokens swallows the newline after them; not after <image>
    ids = tokenizer("<|user|>\n<image>\nhello").input_ids
    assert ids[:2] == [e + 10, n] and tokenizer.convert_ids_to_tokens(ids[2]) == "\n"
    assert tokenizer("hello").input_ids[0] not in (1,)  # no BOS added


def test_add_special_tokens_order(tokenizer):
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        again = AutoTokenizer.from_pretrained(d)
    before = len(again)
    add_special_tokens(again)  # idempotent
    assert len(again) == before and initial_tokenizer_len(again) == initial_tokenizer_len(tokenizer)
