"""Tokenizer helpers: the three xGen-MM special tokens, loading a tokenizer, and a tiny Phi-3-like tokenizer for tests.

Reference order (LAVIS `open_flamingo/src/factory.py`, `add_special_tokens`): `<pad>` (if missing), then
`<image>`, `<image placeholder>`, `<|endofchunk|>` — so `<image>` gets the id `initial_tokenizer_len` (32012
for Phi-3) and the other two follow.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
MEDIA_TOKEN = "<image>"
IMAGE_PLACEHOLDER_TOKEN = "<image placeholder>"
END_OF_CHUNK_TOKEN = "<|endofchunk|>"
END_TOKEN = "<|end|>"
XGENMM_SPECIAL_TOKENS = (MEDIA_TOKEN, IMAGE_PLACEHOLDER_TOKEN, END_OF_CHUNK_TOKEN)

# Phi-3's added tokens after the base vocabulary, in id order (32000..32010); all but the first have rstrip=True.
PHI3_ADDED_TOKENS = (
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
)


def add_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add `<pad>` (when the tokenizer has no pad token or pads with eos) and the three xGen-MM tokens, in place.

    Tokens already present keep their ids. Raises `ValueError` if the three tokens do not end up consecutive
    (the model derives them as `initial_tokenizer_len + 0/1/2`). Returns the tokenizer.
    """
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    vocab = tokenizer.get_vocab()
    missing = [t for t in XGENMM_SPECIAL_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True
        )
    ids = tokenizer.convert_tokens_to_ids(list(XGENMM_SPECIAL_TOKENS))
    if ids != list(range(ids[0], ids[0] + 3)):
        raise ValueError(f"special tokens {XGENMM_SPECIAL_TOKENS} have non-consecutive ids {ids}")
    return tokenizer


def initial_tokenizer_len(tokenizer: PreTrainedTokenizerBase) -> int:
    """Id of `<image>` = the tokenizer length before the three xGen-MM tokens."""
    media = tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)
    if media is None or media == tokenizer.unk_token_id:
        raise ValueError("tokenizer has no <image> token: call add_special_tokens(tokenizer) first")
    return media


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids that end a reply: the eos id and `<|end|>` (when the tokenizer has it)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    end = tokenizer.convert_tokens_to_ids(END_TOKEN)
    if end is not None and end != tokenizer.unk_token_id and end not in ids:
        ids.append(end)
    return ids


def build_tokenizer(name_or_path: str | os.PathLike, **kwargs) -> PreTrainedTokenizerBase:
    """Load a tokenizer (`AutoTokenizer.from_pretrained(name_or_path, **kwargs)`) and `add_special_tokens` to it.

    Note: the released model was trained with the slow sentencepiece Phi-3 tokenizer; a fast
    tokenizer may differ in the leading "▁" piece after role tokens.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except OSError as e:
        raise OSError(
            f"cannot load a tokenizer from {name_or_path!r}: {e}. Pass a local directory holding the tokenizer "
            "files (tokenizer.json / tokenizer.model + tokenizer_config.json), or download it first."
        ) from e
    return add_special_tokens(tokenizer)


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 256) -> PreTrainedTokenizerBase:
    """Train a small BPE tokenizer laid out like xGen-MM's Phi-3 tokenizer (for tests and tiny models).

    Layout: `<unk>`=0, `<s>`=1, `</s>`=2, the trained base vocabulary (SentencePiece-style "▁" word starts,
    printable ASCII + "\\n" + "\\t" alphabet), then `<|endoftext|>` (eos), `<|assistant|>`, `<|placeholder1-4|>`,
    `<|system|>`, `<|end|>`, `<|placeholder5-6|>`, `<|user|>` (rstrip=True after the first), `<pad>`, and
    `<image>`, `<image placeholder>`, `<|endofchunk|>`. No BOS/EOS is added when encoding.

    Args:
        texts: training corpus.
        vocab_size: size of the trained base vocabulary (including the 3 leading specials).
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = [chr(i) for i in range(32, 127)] + ["\n", "\t", "▁"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="<|endoftext|>",
        model_max_length=4096,
    )
    added = [AddedToken(PHI3_ADDED_TOKENS[0], special=True, normalized=False)]
    added += [AddedToken(t, special=True, normalized=False, rstrip=True) for t in PHI3_ADDED_TOKENS[1:]]
    tokenizer.add_tokens(added, special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return add_special_tokens(tokenizer)


__all__ = [
    "END_OF_CHUNK_TOKEN",
    "END_TOKEN",
    "IMAGE_PLACEHOLDER_TOKEN",
    "MEDIA_TOKEN",
    "PAD_TOKEN",
    "add_special_tokens",
    "build_tokenizer",
    "initial_tokenizer_len",
    "stop_token_ids",
    "train_tiny_tokenizer",
]
