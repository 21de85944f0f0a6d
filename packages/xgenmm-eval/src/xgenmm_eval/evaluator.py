"""Local evaluator: batched greedy generation over LLaVA-format records, scoring, and a JSON report.

    records = load_eval_records("eval.json")
    result = evaluate(model, tokenizer, records, metric="vqa", batch_size=8)
    write_results(result, "eval-out")   # eval-out/predictions.jsonl, eval-out/report.json

Scoring functions live in `xgenmm_data.metrics` (shared with xgenmm-train's embedded evaluation):

* `exact`: normalised prediction equals a normalised reference;
* `vqa`: VQAv2 accuracy, min(1, #matching references / 3) over the reference list, after VQA normalisation;
* `choice`: the option letter `extract_choice` finds in the prediction equals the one it finds in the reference
  (options from the record, see `xgenmm_eval.records`; letters A-E when the record gives none).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from xgenmm_data import metrics
from xgenmm_data.templates import build_prompt
from xgenmm_lm.inference import generate_texts

from .prompting import load_image
from .records import EvalRecord

METRICS = ("exact", "vqa", "choice")


DEFAULT_LETTERS = "ABCDE"


def score_prediction(
    metric: str, prediction: str, references: list[str], options: dict | None = None
) -> float:
    """Score one prediction in [0, 1] with the `xgenmm_data.metrics` functions for `metric`.

    `choice`: 1.0 when the letter extracted from the prediction equals the letter extracted from the first
    reference (a reference may be "B", "(B)", "B. dog" or the option text itself), else 0.0.
    """
    if metric == "exact":
        return float(metrics.exact_match(prediction, references))
    if metric == "vqa":
        return float(metrics.vqa_accuracy(prediction, references))
    if metric == "choice":
        opts = options or {letter: "" for letter in DEFAULT_LETTERS}
        truth = metrics.extract_choice(references[0], opts)
        if truth is None:
            raise ValueError(f"reference {references[0]!r} names none of the options {sorted(opts)}")
        return float(metrics.extract_choice(prediction, opts) == truth)
    raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")


@dataclass
class EvalResult:
    """`predictions`: one dict per record (id, question_type, question, prediction, references, score);
    `report`: the summary written to report.json."""

    predictions: list[dict]
    report: dict


def summarize(predictions: list[dict], metric: str, **extra) -> dict:
    """Overall and per-question-type mean score (as fractions in [0, 1]) and counts."""
    by_type: dict[str, list[float]] = {}
    for p in predictions:
        by_type.setdefault(p["question_type"], []).append(p["score"])
    n = len(predictions)
    report = {
        "metric": metric,
        "num_samples": n,
        "accuracy": sum(p["score"] for p in predictions) / n if n else 0.0,
        "per_type": {t: {"count": len(s), "accuracy": sum(s) / len(s)} for t, s in sorted(by_type.items())},
    }
    report.update(extra)
    return report


def evaluate(
    model,
    tokenizer,
    records: list[EvalRecord],
    metric: str = "vqa",
    batch_size: int = 8,
    max_new_tokens: int = 128,
    template: str = "phi_3",
    progress: bool = True,
) -> EvalResult:
    """Generate an answer for every record (greedy, batches of `batch_size`) and score it.

    Prompts are built with `xgenmm_data.build_prompt(query, template, history=...)`; images are loaded per batch.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if metric == "choice":  # fail before generating when a reference names no option
        for r in records:
            try:
                score_prediction(metric, r.references[0], r.references, r.options)
            except ValueError as err:
                raise ValueError(f"record {r.id}: {err}") from err
    predictions = []
    start = time.perf_counter()
    bar = tqdm(total=len(records), desc="eval", unit="q", disable=not progress)
    for i in range(0, len(records), batch_size):
        batch = records[i : i + batch_size]
        prompts = [build_prompt(r.query, template=template, history=r.history) for r in batch]
        images = [[load_image(p) for p in r.images] for r in batch]
        answers = generate_texts(
            model, tokenizer, prompts, images, batch_size=batch_size, max_new_tokens=max_new_tokens
        )
        for r, answer in zip(batch, answers):
            predictions.append(
                {
                    "id": r.id,
                    "question_type": r.question_type,
                    "question": r.query,
                    "prediction": answer,
                    "references": r.references,
                    "score": score_prediction(metric, answer, r.references, r.options),
                }
            )
        bar.update(len(batch))
    bar.close()
    elapsed = time.perf_counter() - start
    report = summarize(predictions, metric, elapsed_s=round(elapsed, 3),
                       samples_per_s=round(len(records) / elapsed, 3) if elapsed > 0 else None)  # fmt: skip
    return EvalResult(predictions=predictions, report=report)


def write_results(result: EvalResult, output_dir) -> tuple[Path, Path]:
    """Write `predictions.jsonl` and `report.json` into `output_dir` (created); returns both paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_path, report_path = out / "predictions.jsonl", out / "report.json"
    with pred_path.open("w", encoding="utf-8") as f:
        for p in result.predictions:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    report_path.write_text(json.dumps(result.report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return pred_path, report_path


__all__ = ["METRICS", "EvalResult", "evaluate", "score_prediction", "summarize", "write_results"]
