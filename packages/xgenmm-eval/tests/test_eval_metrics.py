"""Scoring of known predictions and the report's per-type accuracy (no model needed)."""

import json

import pytest

from xgenmm_eval.evaluator import EvalResult, score_prediction, summarize, write_results
from xgenmm_eval.records import parse_options


@pytest.mark.parametrize(
    "metric, prediction, references, expected",
    [
        ("exact", "Two dogs.", ["2 dogs"], 1.0),  # number words, punctuation
        ("exact", "The red one", ["red 1"], 1.0),  # articles
        ("exact", "red car", ["red"], 0.0),
        ("exact", "dont know", ["don't know", "x"], 1.0),  # any reference, contractions
        ("vqa", "red", ["red"] * 3 + ["maroon"] * 7, 0.9),  # leave-one-out: 3 subsets of 2 matches, 7 of 3
        ("vqa", "red", ["red"] * 10, 1.0),
        ("vqa", "blue", ["red"] * 10, 0.0),
        ("vqa", "Red.", ["red"], 1.0),  # single answer: exact match after normalisation
        ("choice", "B", ["B"], 1.0),
        ("choice", "(C) dog", ["C"], 1.0),
        ("choice", "The answer is A.", ["B. cat"], 0.0),
    ],
)
def test_score_known_predictions(metric, prediction, references, expected):
    assert score_prediction(metric, prediction, references) == pytest.approx(expected)


def test_choice_uses_option_texts():
    opts = parse_options("Which animal?\nA. cat\nB) dog\n(C) red bird")
    assert opts == {"A": "cat", "B": "dog", "C": "red bird"}
    assert score_prediction("choice", "It is a dog", ["B"], opts) == 1.0
    assert score_prediction("choice", "a red bird", ["dog"], opts) == 0.0  # reference given as option text
    with pytest.raises(ValueError, match="names none of the options"):
        score_prediction("choice", "A", ["zebra"], opts)
    with pytest.raises(ValueError, match="unknown metric"):
        score_prediction("bleu", "a", ["a"])


def test_summarize_per_type_and_write(tmp_path):
    preds = [
        {"id": "1", "question_type": "color", "score": 1.0},
        {"id": "2", "question_type": "color", "score": 0.0},
        {"id": "3", "question_type": "count", "score": 1.0},
        {"id": "4", "question_type": "color", "score": 0.5},
    ]
    report = summarize(preds, "vqa", model="m")
    assert report["num_samples"] == 4 and report["accuracy"] == pytest.approx(0.625)
    assert report["per_type"] == {
        "color": {"count": 3, "accuracy": 0.5},
        "count": {"count": 1, "accuracy": 1.0},
    }
    assert report["metric"] == "vqa" and report["model"] == "m"
    pred_path, report_path = write_results(EvalResult(preds, report), tmp_path / "out")
    assert [json.loads(line)["id"] for line in pred_path.read_text().splitlines()] == ["1", "2", "3", "4"]
    assert json.loads(report_path.read_text()) == report
