"""lmms-eval model class for xGen-MM checkpoints (needs `pip install "xgenmm-eval[lmms]"`).

Registered as `xgenmm` through the `lmms_eval.models` entry point (`xgenmm_eval.lmms_plugin`). Requests, as
lmms-eval's simple models receive them (`Instance.args`):

* `generate_until`: `(context, gen_kwargs, doc_to_visual, doc_id, task, split)`;
* `loglikelihood`: `(context, continuation_or_doc_to_target, doc_to_visual, doc_id, task, split)`; the
  answer is `GenerationResult(text=(negative log-likelihood, is_greedy))` (see `loglikelihood`).

`doc_to_visual(self.task_dict[task][split][doc_id])` gives the document's images. Prompting is the one of the
VLMEvalKit bridge (VLMEvalKit `vlmeval/vlm/xgen_mm.py`): the context keeps its own `<image>` placeholders when
it has one per image, else `"<image> "` per image goes in front; then the `phi_3` template. Decoding is greedy
(`do_sample`/`temperature` in gen_kwargs are ignored), `max_new_tokens` from gen_kwargs (default 1024), the
reply is cut at `<|end|>` and at each `until` string.
"""

from __future__ import annotations

import json

from PIL import Image
from tqdm import tqdm

from xgenmm_data.processing import to_rgb
from xgenmm_data.templates import build_prompt
from xgenmm_lm.inference import generate_texts

try:
    from lmms_eval.api.instance import GenerationResult, Instance
    from lmms_eval.api.model import lmms
except ImportError as err:
    raise ImportError(
        f"xgenmm_eval.lmms_model needs lmms-eval: pip install 'xgenmm-eval[lmms]' ({err})"
    ) from err

from .inputs import continuation_logprob
from .loading import load_model
from .prompting import place_images


class XGenMMLmms(lmms):
    """lmms-eval model: `--model xgenmm --model_args pretrained=CKPT[,device=cpu,dtype=bf16,max_new_tokens=N]`."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        model=None,
        tokenizer=None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int | str = 1024,
        template: str = "phi_3",
        **kwargs,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"xgenmm: unexpected model_args {sorted(kwargs)}")
        if model is None:
            if pretrained is None:
                raise ValueError("xgenmm: pass model_args pretrained=<checkpoint folder>")
            model, tokenizer = load_model(pretrained, device=device, dtype=dtype)
        self.model, self.tokenizer = model, tokenizer
        self.batch_size_per_gpu = 1 if str(batch_size) == "auto" else int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.template = template

    @property
    def batch_size(self) -> int:
        """Requests per generation batch (lmms-eval reads this name)."""
        return self.batch_size_per_gpu

    def _visuals(self, doc_to_visual, doc_id, task, split) -> list[Image.Image]:
        if doc_to_visual is None:
            return []
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        images = []
        for v in visuals:
            if not isinstance(v, Image.Image):
                raise ValueError(
                    f"xgenmm: task {task} doc {doc_id} gives a {type(v).__name__}; only images are supported"
                )
            images.append(to_rgb(v))  # as in training: 16-bit grey scaled to 8 bits
        return images

    def _prompt(self, context: str, num_images: int) -> str:
        return build_prompt(place_images(context, num_images, sep=" "), template=self.template)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers, batched over requests that share the same gen_kwargs."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        results: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="xgenmm generate", disable=self.rank != 0)
        for indices in groups.values():
            gen_kwargs = dict(requests[indices[0]].args[1] or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_new_tokens", self.max_new_tokens))
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                prompts, images = [], []
                for i in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    visuals = self._visuals(doc_to_visual, doc_id, task, split)
                    prompts.append(self._prompt(context, len(visuals)))
                    images.append(visuals)
                answers = generate_texts(
                    self.model, self.tokenizer, prompts, images, batch_size=len(chunk), max_new_tokens=max_new
                )
                for i, prompt, answer in zip(chunk, prompts, answers):
                    for stop in until:
                        if stop:
                            answer = answer.split(stop)[0]
                    results[i] = answer
                    self.cache_hook.add_partial("generate_until", (prompt, gen_kwargs), answer)
                bar.update(len(chunk))
        bar.close()
        return results

    def loglikelihood(self, requests: list[Instance]) -> list:
        """Per request `(negative log-likelihood of the continuation (summed over its tokens), whether greedy
        decoding yields it)`, wrapped in lmms-eval's `GenerationResult`.

        lmms-eval's convention: the number is a loss (its `multiple_choice` scoring picks `argmin`), so `acc`
        is the choice of highest summed log-prob and `acc_norm` the highest per character. lmms-eval 0.7.3
        turns every result that is not a string, a `(str, dict)` pair or a `GenerationResult` into its
        `str()` (then `multiple_choice` post-processing fails); a `GenerationResult`'s `.text` is passed on
        unchanged, so the tuple reaches the task's `process_results`."""
        results = []
        for req in tqdm(requests, desc="xgenmm loglikelihood", disable=self.rank != 0):
            context, target, doc_to_visual, doc_id, task, split = req.args
            continuation = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
            visuals = self._visuals(doc_to_visual, doc_id, task, split)
            prompt = self._prompt(context, len(visuals))
            logp, greedy = continuation_logprob(self.model, self.tokenizer, prompt, continuation, visuals)
            results.append(GenerationResult(text=(-logp, greedy)))
        return results

    def generate_until_multi_round(self, requests) -> list[str]:
        """Not supported: lmms-eval's multi-round tasks raise a clear error."""
        raise NotImplementedError("xgenmm: multi-round generation is not supported")


__all__ = ["XGenMMLmms"]
