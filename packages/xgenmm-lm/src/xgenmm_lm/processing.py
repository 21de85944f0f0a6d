"""`XGenMMProcessor` (a transformers `ProcessorMixin`): the tokenizer, the anyres image processor and the phi_3
chat template, turning chat messages and PIL images into the inputs `XGenMM.forward` / `generate` take.

    processor = AutoProcessor.from_pretrained(folder)
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[[image]])   # input_ids, attention_mask, pixel_values, image_sizes
    new_ids = model.generate(**inputs, max_new_tokens=64)
    answers = processor.batch_decode(new_ids, skip_special_tokens=True)

`XGenMMImageProcessor` wraps `xgenmm_vision.AnyResImageProcessor` (same pixels, bit for bit) and reads both its own
`preprocessor_config.json` and the released one (the original's `image_processing_blip_3.py::Blip3ImageProcessor`).
"""

from __future__ import annotations

from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor

from xgenmm_vision import AnyResImageProcessor, normalize_grids

from .configuration import XGenMMConfig
from .tokenization import MEDIA_TOKEN, add_special_tokens, build_tokenizer

# The phi_3 conversation of the original's SFT (`open_flamingo/train/sft_data_utils.py::preprocess_phi_3_new`):
# the fixed system message unless the conversation brings one, then `<|role|>\n{content}<|end|>\n` per turn;
# an image content item is `<image>\n`, the generation prompt `<|assistant|>\n`.
PHI3_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
PHI3_CHAT_TEMPLATE = (
    r"""{%- if messages[0]['role'] != 'system' -%}{{ "<|system|>\n"""
    + PHI3_SYSTEM
    + r"""<|end|>\n" }}{%- endif -%}"""
    r"{%- for message in messages -%}{{ '<|' + message['role'] + '|>\n' }}"
    r"{%- if message['content'] is string -%}{{ message['content'] }}"
    r"{%- else -%}{%- for item in message['content'] -%}"
    r"{%- if item['type'] == 'image' -%}{{ '<image>\n' }}{%- elif item['type'] == 'text' -%}{{ item['text'] }}"
    r"{%- endif -%}{%- endfor -%}{%- endif -%}{{ '<|end|>\n' }}{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)


class XGenMMImageProcessor(BaseImageProcessor):
    """Anyres tiling as a transformers image processor: each PIL image → `(1 + cols·rows, 3, S, S)` float32.

    Args:
        base_size: crop side S (the vision encoder's image size).
        grids: candidate canvases `[[W, H], ...]` in pixels; None = the released five for `base_size`.
        image_mean, image_std: per-channel normalisation.
        resize_backend: "pil" (bit-exact with the original) or "torch" (faster, within 2 levels of 255).
    The released `preprocessor_config.json` fields (`size: [S, S]`, `grids`, `image_mean`, `image_std`) are read too.
    """

    model_input_names = ["pixel_values", "image_sizes"]

    def __init__(
        self,
        base_size: int = 384,
        grids: list | None = None,
        image_mean: list | tuple = (0.5, 0.5, 0.5),
        image_std: list | tuple = (0.5, 0.5, 0.5),
        resize_backend: str = "pil",
        **kwargs,
    ):
        size = kwargs.pop("size", None)  # the released form: [S, S]
        if size is not None:
            base_size = size["height"] if isinstance(size, dict) else size[0]
        for released_only in ("resize_mode", "interpolation_mode", "image_processor_type", "auto_map"):
            kwargs.pop(released_only, None)
        super().__init__(**kwargs)
        self.base_size = int(base_size)
        self.grids = [list(g) for g in normalize_grids(grids, self.base_size)]
        self.image_mean = [float(x) for x in image_mean]
        self.image_std = [float(x) for x in image_std]
        self.resize_backend = resize_backend
        self.anyres()  # validate now

    @classmethod
    def from_config(cls, config: XGenMMConfig, **kwargs) -> XGenMMImageProcessor:
        """The processor matching a model config (base size, grids, normalisation)."""
        return cls(
            base_size=config.vision_config.image_size,
            grids=config.anyres_grids,
            image_mean=config.image_mean,
            image_std=config.image_std,
            **kwargs,
        )

    def anyres(self) -> AnyResImageProcessor:
        """The `AnyResImageProcessor` with these settings (it does the tiling and normalisation)."""
        return AnyResImageProcessor(
            base_size=self.base_size,
            grids=[tuple(g) for g in self.grids],
            mean=self.image_mean,
            std=self.image_std,
            resize_backend=self.resize_backend,
        )

    def preprocess(self, images, **kwargs) -> BatchFeature:
        """images: a PIL image or a list of them → `pixel_values` list of `(Np_i, 3, S, S)`, `image_sizes` list
        of original `[w, h]`."""
        images = images if isinstance(images, (list, tuple)) else [images]
        done = self.anyres().batch(images)
        return BatchFeature(
            {"pixel_values": done.pixel_values, "image_sizes": [list(s) for s in done.image_sizes]}
        )


class XGenMMProcessor(ProcessorMixin):
    """Tokenizer + `XGenMMImageProcessor` + the phi_3 chat template.

    `processor(text, images)` returns `input_ids (B, L)`, `attention_mask (B, L)` (padded on the tokenizer's
    `padding_side`), `pixel_values` (per sample, a list of per-image `(Np, 3, S, S)` tensors) and `image_sizes`
    (per sample, a list of `[w, h]`). Each `<image>` in a text takes the next image of that sample.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template: str | None = None, **kwargs):
        add_special_tokens(tokenizer)
        super().__init__(
            image_processor, tokenizer, chat_template=chat_template or PHI3_CHAT_TEMPLATE, **kwargs
        )
        self.image_token = MEDIA_TOKEN

    @classmethod
    def from_model(cls, model, tokenizer, **kwargs) -> XGenMMProcessor:
        """The processor of a built model and its tokenizer."""
        return cls(XGenMMImageProcessor.from_config(model.config), tokenizer, **kwargs)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """[image processor, tokenizer] of a folder of either layout. Without a `preprocessor_config.json`
        (checkpoints of xgenmm-lm 0.1) the image processor is built from `config.json`."""
        kwargs.pop("subfolder", None)
        hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
        try:
            image_processor = XGenMMImageProcessor.from_pretrained(pretrained_model_name_or_path, **hub)
        except OSError:
            config = XGenMMConfig.from_pretrained(pretrained_model_name_or_path, **hub)
            image_processor = XGenMMImageProcessor.from_config(config)
        return [image_processor, build_tokenizer(pretrained_model_name_or_path, **hub)]

    def __call__(self, text=None, images=None, add_special_tokens: bool = False, **kwargs) -> BatchFeature:
        """text: a prompt or a list of prompts (template applied, one `<image>` per image); images: None, a PIL
        image, a flat list (in `<image>` order over the batch) or one list per prompt. Tokenizer keyword
        arguments pass through (`padding` defaults to True; no BOS/EOS added unless `add_special_tokens=True`)."""
        if text is None:
            raise ValueError("XGenMMProcessor needs text (prompts with one <image> per image)")
        texts = [text] if isinstance(text, str) else list(text)
        counts = [t.count(self.image_token) for t in texts]
        per_sample = _images_per_sample(images, counts)
        kwargs.setdefault("padding", True)
        kwargs.pop("return_tensors", None)
        encoded = self.tokenizer(texts, add_special_tokens=add_special_tokens, return_tensors="pt", **kwargs)
        pixel_values, image_sizes = [], []
        for sample in per_sample:
            processed = self.image_processor(sample) if sample else {"pixel_values": [], "image_sizes": []}
            pixel_values.append(list(processed["pixel_values"]))
            image_sizes.append(list(processed["image_sizes"]))
        data = {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "pixel_values": pixel_values,
            "image_sizes": image_sizes,
        }
        return BatchFeature(data)

    @property
    def model_input_names(self) -> list[str]:
        """The keys of `__call__`'s output that `XGenMM.forward` / `generate` take."""
        return ["input_ids", "attention_mask", "pixel_values", "image_sizes"]


def _images_per_sample(images, counts: list[int]) -> list[list]:
    """Group `images` (None, one image, a flat list, or a list per sample) by sample, checking the counts."""
    if images is None:
        images = []
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if images and all(isinstance(x, (list, tuple)) for x in images):
        groups = [list(x) for x in images]
        if len(groups) != len(counts):
            raise ValueError(f"images has {len(groups)} lists for {len(counts)} texts")
    else:
        if len(images) != sum(counts):
            raise ValueError(f"{sum(counts)} <image> token(s) in the texts but {len(images)} image(s)")
        groups, start = [], 0
        for n in counts:
            groups.append(list(images[start : start + n]))
            start += n
    for b, (group, n) in enumerate(zip(groups, counts)):
        if len(group) != n:
            raise ValueError(f"text {b}: {n} <image> token(s) but {len(group)} image(s)")
    return groups


__all__ = [
    "PHI3_CHAT_TEMPLATE",
    "XGenMMImageProcessor",
    "XGenMMProcessor",
]
