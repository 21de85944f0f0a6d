"""`xgenmm-eval run` end to end on a tiny checkpoint: predictions, scores and the per-type report."""

import json

import pytest

from xgenmm_data.templates import build_prompt
from xgenmm_eval import cli
from xgenmm_eval.prompting import load_image
from xgenmm_lm.inference import generate_texts

QUESTIONS = [
    ("red.png", "<image>\nWhat colour is it?", "t1"),
    ("tall.png", "Is it tall?", "t2"),  # no placeholder: "<image>\n" is put in front (single image rule)
    ("wide.png", "<image>\nHow wide?", "t1"),
    (None, "How many cats are there?", "t2"),  # text only
]


def _records(image_files, answers):
    by_name = {p.name: p for p in image_files}
    recs = []
    for k, ((img, q, t), a) in enumerate(zip(QUESTIONS, answers)):
        rec = {"id": f"q{k}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}],
               "question_type": t}  # fmt: skip
        if img:
            rec["image"] = str(by_name[img])
        recs.append(rec)
    return recs


@pytest.fixture(scope="module")
def direct_predictions(tiny_model, image_files):
    """What the model answers to each question, computed straight through the library (batch of 1)."""
    model, tokenizer = tiny_model
    by_name = {p.name: p for p in image_files}
    out = []
    for img, q, _ in QUESTIONS:
        query = q if (img is None or "<image>" in q) else "<image>\n" + q
        images = [load_image(by_name[img])] if img else []
        out += generate_texts(
            model, tokenizer, [build_prompt(query)], [images], batch_size=1, max_new_tokens=4
        )
    return out


def test_run_scores_known_predictions(tiny_ckpt, image_files, direct_predictions, tmp_path, capsys):
    # references: the model's own answer for q0, q1, q3 (score 1) and a different one for q2 (score 0)
    refs = list(direct_predictions)
    refs[2] = refs[2] + " xyzzy"
    data = tmp_path / "eval.json"
    data.write_text(json.dumps(_records(image_files, refs)))
    out = tmp_path / "out"
    rc = cli.main(["run", "--model", str(tiny_ckpt), "--data", str(data), "--metric", "exact", "--batch-size", "3",
                   "--max-new-tokens", "4", "--output-dir", str(out), "--device", "cpu", "--no-progress"])  # fmt: skip
    assert rc == 0
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["q0", "q1", "q2", "q3"]
    assert [p["prediction"] for p in preds] == direct_predictions  # batched (3 + 1) == one by one
    assert [p["score"] for p in preds] == [1.0, 1.0, 0.0, 1.0]
    report = json.loads((out / "report.json").read_text())
    assert report["num_samples"] == 4 and report["accuracy"] == pytest.approx(0.75)
    assert report["per_type"] == {"t1": {"count": 2, "accuracy": 0.5}, "t2": {"count": 2, "accuracy": 1.0}}
    assert report["metric"] == "exact" and report["model"] == str(tiny_ckpt) and report["samples_per_s"] > 0
    assert json.loads(capsys.readouterr().out) == report


def test_run_limit_and_bad_data(tiny_ckpt, image_files, tmp_path, capsys):
    data = tmp_path / "eval.json"
    data.write_text(json.dumps(_records(image_files, ["a", "b", "c", "d"])))
    rc = cli.main(["run", "--model", str(tiny_ckpt), "--data", str(data), "--limit", "1", "--max-new-tokens", "2",
                   "--output-dir", str(tmp_path / "o"), "--device", "cpu", "--no-progress"])  # fmt: skip
    assert rc == 0 and json.loads((tmp_path / "o" / "report.json").read_text())["num_samples"] == 1
    capsys.readouterr()
    # an MC reference that names no option fails before any generation, naming the record
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "m1", "conversations": [
        {"from": "human", "value": "Pick one\nA. cat\nB. dog"}, {"from": "gpt", "value": "zebra"}]}]))  # fmt: skip
    rc = cli.main(
        ["run", "--model", str(tiny_ckpt), "--data", str(bad), "--metric", "choice", "--device", "cpu"]
    )
    assert rc == 2 and "record m1" in capsys.readouterr().err
    rc = cli.main(["run", "--model", str(tmp_path / "nope"), "--data", str(data), "--device", "cpu"])
    assert rc == 2 and "no config.json" in capsys.readouterr().err
