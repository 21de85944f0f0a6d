"""Pre-training items from streamed samples: the next-token loss on text tokens only.

`PretrainProcessor(sample)` turns a parsed stream sample (`{"text", "images": [bytes], ...}`, see
`webformats.py`) into the item of the xgenmm_data contract (the one `SupervisedDataset` yields)::

    {"input_ids": (L,) long, "labels": (L,) long, "pixel_values": [(Np, 3, S, S) per image],
     "image_sizes": [(w, h) per image], "num_tokens": int}

so `DataCollator`, `PackedRows` and the model take it as they are. Text = the sample's text + the tokenizer's
end-of-text token, tokenized with the tokenizer's own special tokens (a BOS where the LM uses one), cut at
`max_length` text tokens. Labels = input_ids with `<image>` and `<image placeholder>` set to -100 (the model
also sets -100 on every vision position it inserts); `<|endofchunk|>` is trained by default — the original
masks it with a TODO saying it should not (`open_flamingo/train/losses.py`, `NextTokenPrediction`) and a
caption model must learn where a caption ends — `endofchunk_loss=False` masks it as the original does.
"""

from __future__ import annotations

import torch

from .processing import BadSample, call_processor, open_image
from .tokenization import IGNORE_INDEX, IMAGE_TOKEN
from .webformats import END_OF_CHUNK

IMAGE_PLACEHOLDER = "<image placeholder>"


def keep_first_images(text: str, n: int, image_token: str = IMAGE_TOKEN, end_of_chunk: str = END_OF_CHUNK):
    """Drop the `<image>` markers after the n-th (and the `<|endofchunk|>` before each), keeping all text:
    the original keeps the first MAX_NUM_IMAGES images of a document and all its sentences."""
    parts = text.split(image_token)
    if len(parts) - 1 <= n:
        return text
    out = parts[0]
    for k, piece in enumerate(parts[1:], start=1):
        if k <= n:
            out += image_token + piece
        else:
            out = out[: -len(end_of_chunk)] if out.endswith(end_of_chunk) else out
            out += " " + piece
    return out


class PretrainProcessor:
    """Stream sample -> item. Holds the injected tokenizer, image processor and `vision_tokens_for`.

    Args:
        tokenizer: transformers-compatible, with `<image>` (and `<|endofchunk|>`) as single added tokens.
        image_processor: PIL.Image -> `(pixels (Np,3,S,S), (w,h))` or `.pixel_values` / `.image_size` (anyres or
            base resolution: whatever the processor does).
        vision_tokens_for: (w, h) -> LM tokens per image (e.g. 128 x vision groups).
        max_length: text-token budget; longer texts are cut and the images whose `<image>` was cut dropped.
        max_images: images kept per sample (interleaved documents; None = all).
        endofchunk_loss: train on `<|endofchunk|>` (default) or mask it.
    """

    def __init__(
        self,
        tokenizer,
        image_processor,
        vision_tokens_for,
        max_length: int | None = 2048,
        max_images: int | None = 4,
        endofchunk_loss: bool = True,
        add_special_tokens: bool = True,
        image_token: str = IMAGE_TOKEN,
        end_of_chunk: str = END_OF_CHUNK,
    ):
        self.tokenizer, self.image_processor, self.vision_tokens_for = (
            tokenizer,
            image_processor,
            vision_tokens_for,
        )
        self.max_length, self.max_images = max_length, max_images
        self.add_special_tokens, self.image_token, self.end_of_chunk = (
            add_special_tokens,
            image_token,
            end_of_chunk,
        )
        vocab = tokenizer.get_vocab()
        if image_token not in vocab:
            raise ValueError(
                f"the tokenizer has no {image_token} token; add the xGen-MM special tokens first"
            )
        self.image_id = vocab[image_token]
        masked = [image_token, IMAGE_PLACEHOLDER] + ([] if endofchunk_loss else [end_of_chunk])
        self.masked_ids = torch.tensor(sorted({vocab[t] for t in masked if t in vocab}), dtype=torch.long)

    def encode(self, text: str, num_images: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(input_ids (L,), labels (L,), images kept) for a text with `num_images` `<image>` markers."""
        eos = self.tokenizer.eos_token or ""
        ids = self.tokenizer(text + eos, add_special_tokens=self.add_special_tokens)["input_ids"]
        input_ids = torch.tensor(ids, dtype=torch.long)
        if int((input_ids == self.image_id).sum()) != num_images:
            raise BadSample(
                f"{int((input_ids == self.image_id).sum())} {self.image_token} ids after tokenization != "
                f"{num_images} images (is {self.image_token} a single added token of the tokenizer?)"
            )
        if self.max_length is not None and len(input_ids) > self.max_length:
            input_ids = input_ids[: self.max_length]
        kept = int((input_ids == self.image_id).sum())
        labels = input_ids.masked_fill(torch.isin(input_ids, self.masked_ids), IGNORE_INDEX)
        return input_ids, labels, kept

    def __call__(self, sample: dict) -> dict:
        text, images = sample["text"], list(sample["images"])
        if self.max_images is not None and len(images) > self.max_images:
            text = keep_first_images(text, self.max_images, self.image_token, self.end_of_chunk)
            images = images[: self.max_images]
        input_ids, labels, kept = self.encode(text, len(images))
        if images and not kept:
            raise BadSample(f"no {self.image_token} left after truncation at max_length={self.max_length}")
        if not bool((labels != IGNORE_INDEX).any()):
            raise BadSample("no text tokens to train on")
        pixel_values, sizes = [], []
        for data in images[:kept]:
            pixels, size = call_processor(self.image_processor, open_image(data))
            pixel_values.append(pixels)
            sizes.append(size)
        vision = sum(self.vision_tokens_for(s) for s in sizes)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "pixel_values": pixel_values,
            "image_sizes": sizes,
            "num_tokens": len(input_ids) - kept + vision,
        }


__all__ = ["IMAGE_PLACEHOLDER", "PretrainProcessor", "keep_first_images"]
