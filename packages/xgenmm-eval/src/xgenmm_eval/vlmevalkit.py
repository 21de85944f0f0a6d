"""VLMEvalKit bridge: our checkpoints as a VLMEvalKit model, run through VLMEvalKit's own inference and scoring.

VLMEvalKit (`vlmeval`) is optional and not on PyPI; nothing here imports it until a VLMEvalKit class is asked for.
The model interface it defines (`vlmeval/vlm/base.py`, class `BaseModel`):

* `generate(message, dataset)` checks the message and calls `generate_inner(message, dataset)` -> str;
* a message is a list of `{"type": "image" | "text", "value": ...}` (image values are file paths);
* `INTERLEAVE = True` declares that images may appear anywhere between the text items;
* `use_custom_prompt(dataset)` False -> the dataset builds the message itself;
* `set_dump_image(fn)` is called by `infer_data` before the first sample.

Prompt and decoding match VLMEvalKit's own xGen-MM wrapper (`vlmeval/vlm/xgen_mm.py`): items in order,
`"<image> "` per image, the `phi_3` template, greedy decoding, `max_new_tokens=1024`, text cut at `<|end|>`.
Images of one message are preprocessed together (anyres, one pixel tensor per image).

    VLM = vlm_class()                                # subclass of vlmeval's BaseModel
    vlm = VLM("runs/sft/checkpoint-final")           # or VLM(model=model, tokenizer=tokenizer)
    vlm.generate([{"type": "image", "value": "a.jpg"}, {"type": "text", "value": "What is this?"}])
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from xgenmm_data.templates import build_prompt
from xgenmm_lm.inference import generate_texts

from .loading import load_model
from .prompting import interleave_message, load_image

logger = logging.getLogger("xgenmm_eval")

VLMEVALKIT_INSTALL = (
    "VLMEvalKit is not installed (it is not on PyPI). Install it from source into this environment:\n"
    "    git clone https://github.com/open-compass/VLMEvalKit.git\n"
    "    pip install -e VLMEvalKit      # or: uv pip install -e VLMEvalKit"
)


class VLMEvalKitMissing(ImportError):
    """VLMEvalKit cannot be imported; the message says how to install it."""


def require_vlmeval():
    """Import VLMEvalKit's `BaseModel`, or raise `VLMEvalKitMissing` saying how to install VLMEvalKit."""
    try:
        import vlmeval  # noqa: F401
        from vlmeval.vlm.base import BaseModel
    except ImportError as err:
        raise VLMEvalKitMissing(f"{VLMEVALKIT_INSTALL}\n(import error: {err})") from err
    return BaseModel


class XGenMMVLMMixin:
    """The VLMEvalKit model logic; combined with a `BaseModel` class by `vlm_class`.

    Args:
        model_path: checkpoint folder (ours or a released snapshot); ignored when `model` is given.
        model, tokenizer: an already loaded `XGenMM` and its tokenizer.
        device, dtype: see `xgenmm_eval.loading`.
        max_new_tokens: generation budget (VLMEvalKit's xGen-MM wrapper: 1024).
        template: chat template name in `xgenmm_data` (`phi_3`).
    """

    INTERLEAVE = True
    INSTALL_REQ = False

    def __init__(
        self,
        model_path=None,
        model=None,
        tokenizer=None,
        device=None,
        dtype=None,
        max_new_tokens: int = 1024,
        template: str = "phi_3",
        **kwargs,
    ):
        super().__init__()
        if model is None:
            if model_path is None:
                raise ValueError("XGenMMVLM needs model_path or model + tokenizer")
            model, tokenizer = load_model(model_path, device=device, dtype=dtype)
        elif tokenizer is None:
            raise ValueError("XGenMMVLM: pass the tokenizer together with the model")
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens = int(kwargs.pop("max_new_tokens", max_new_tokens))
        self.template = template
        if kwargs:
            raise TypeError(f"XGenMMVLM: unexpected arguments {sorted(kwargs)}")

    def use_custom_prompt(self, dataset):
        """VLMEvalKit hook: always False, the dataset's own prompt is used."""
        return False  # no dataset-specific prompts, as VLMEvalKit's own xGen-MM wrapper

    def build_inputs(self, message) -> tuple[str, list]:
        """message -> (full prompt string, image values in order)."""
        query, images = interleave_message(message)
        return build_prompt(query, template=self.template), images

    def generate_batch(self, messages, dataset=None, batch_size: int = 8) -> list[str]:
        """Answers for several messages at once (batched generation; VLMEvalKit itself calls one at a time)."""
        prompts, images = [], []
        for message in messages:
            prompt, values = self.build_inputs(message)
            prompts.append(prompt)
            images.append([load_image(v) for v in values])
        return generate_texts(
            self.model,
            self.tokenizer,
            prompts,
            images,
            batch_size=batch_size,
            max_new_tokens=self.max_new_tokens,
        )

    def generate_inner(self, message, dataset=None) -> str:
        """VLMEvalKit hook: the answer to one interleaved message (a list of text / image parts)."""
        return self.generate_batch([message], dataset, batch_size=1)[0]


_VLM_CLASSES: dict[type, type] = {}


def vlm_class(base: type | None = None) -> type:
    """`XGenMMVLM`: `XGenMMVLMMixin` on top of VLMEvalKit's `BaseModel` (or of `base`, e.g. a test stand-in)."""
    if base is None:
        base = require_vlmeval()
    if base not in _VLM_CLASSES:
        _VLM_CLASSES[base] = type("XGenMMVLM", (XGenMMVLMMixin, base), {"__module__": __name__})
    return _VLM_CLASSES[base]


def __getattr__(name):
    if name == "XGenMMVLM":
        return vlm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _pred_file(work_dir: Path, model_name: str, dataset_name: str) -> str:
    try:
        from vlmeval.smp import get_pred_file_path
    except ImportError:  # older VLMEvalKit: always xlsx
        return str(work_dir / f"{model_name}_{dataset_name}.xlsx")
    return get_pred_file_path(str(work_dir), model_name, dataset_name, use_env_format=True)


XLSX_HINT = "writing .xlsx needs the xlsxwriter package: pip install xlsxwriter (or set PRED_FORMAT=tsv)"


def xlsx_writer_missing() -> bool:
    """True when VLMEvalKit's default `.xlsx` prediction files cannot be written (xlsxwriter missing)."""
    return importlib.util.find_spec("xlsxwriter") is None


def prediction_file(work_dir, model_name: str, dataset_name: str) -> str:
    """The prediction file VLMEvalKit's `infer_data_job` wrote for `dataset_name`.

    VLMEvalKit names it `{work_dir}/{model_name}_{dataset_name}.xlsx` (or `.tsv` / `.json` with `PRED_FORMAT`);
    when writing that format fails (`.xlsx` without xlsxwriter) its `dump` writes the same name with `.pkl`
    instead. Returns whichever exists (a warning names the fallback); raises `FileNotFoundError` naming both
    and, for `.xlsx`, the missing package."""
    expected = _pred_file(Path(work_dir), model_name, dataset_name)
    if os.path.exists(expected):
        return expected
    fallback = expected.rsplit(".", 1)[0] + ".pkl"
    hint = f"; {XLSX_HINT}" if expected.endswith(".xlsx") and xlsx_writer_missing() else ""
    if os.path.exists(fallback):
        logger.warning(
            "VLMEvalKit could not write %s and wrote %s instead%s; scoring %s",
            expected,
            fallback,
            hint,
            fallback,
        )
        return fallback
    raise FileNotFoundError(
        f"VLMEvalKit's inference left no prediction file: neither {expected} nor {fallback}{hint}"
    )


def run_vlmevalkit(
    model_path,
    datasets: list[str],
    work_dir="vlmeval-outputs",
    model_name: str | None = None,
    judge: str = "exact_matching",
    nproc: int = 4,
    mode: str = "all",
    verbose: bool = False,
    device=None,
    dtype=None,
    max_new_tokens: int = 1024,
) -> dict:
    """Run VLMEvalKit's `infer_data_job` with our model instance, then `dataset.evaluate` (mode "all").

    Predictions land in `work_dir/model_name/` under VLMEvalKit's own file names. The judge defaults to
    `exact_matching` (no API key needed); pass e.g. `gpt-4o-mini` to use VLMEvalKit's LLM answer extraction.
    Returns `{dataset_name: evaluation result}` (None for mode "infer").
    """
    require_vlmeval()
    from vlmeval.dataset import build_dataset
    from vlmeval.inference import infer_data_job

    if mode not in ("all", "infer"):
        raise ValueError("mode must be 'all' or 'infer'")
    model_name = model_name or f"xgenmm-{Path(model_path).resolve().name}"
    out = Path(work_dir) / model_name
    out.mkdir(parents=True, exist_ok=True)
    if _pred_file(out, model_name, "x").endswith(".xlsx") and xlsx_writer_missing():
        logger.warning("VLMEvalKit will write its predictions as .pkl, not .xlsx: %s", XLSX_HINT)
    model = vlm_class()(model_path, device=device, dtype=dtype, max_new_tokens=max_new_tokens)
    results = {}
    for name in datasets:
        dataset = build_dataset(name)
        if dataset is None:
            raise ValueError(f"VLMEvalKit does not know the dataset {name!r}")
        infer_data_job(model, work_dir=str(out), model_name=model_name, dataset=dataset, verbose=verbose)
        if mode == "infer":
            results[name] = None
            continue
        pred_file = prediction_file(out, model_name, dataset.dataset_name)
        results[name] = dataset.evaluate(pred_file, model=judge, nproc=nproc, verbose=verbose)
    return results


__all__ = [
    "VLMEVALKIT_INSTALL",
    "VLMEvalKitMissing",
    "XGenMMVLMMixin",
    "prediction_file",
    "require_vlmeval",
    "run_vlmevalkit",
    "vlm_class",
]
