"""Malformed records go through the data package's record check in every reader: the tiny tokenizer's corpus
(model.init=tiny), the SFT dataset (skipped and counted) and the preference dataset (a clear error)."""

import json

import pytest

from xgenmm_train.cli import main
from xgenmm_train.config import to_yaml
from xgenmm_train.data import _normalise_preference, all_texts
from xgenmm_train.errors import EXIT_ERROR
from xgenmm_train.modeling import build_model
from xgenmm_train.sft import SFTRecipe

NO_VALUE = {"id": "no-value", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt"}]}
NOT_AN_OBJECT = ["not", "a", "record"]


def test_all_texts_leaves_out_malformed_records():
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "answer": "x"}
    assert all_texts([NO_VALUE, NOT_AN_OBJECT, 7, good]) == ["q", "a", "x"]


def test_tiny_init_reaches_the_dataset_checks(tmp_path, synth, make_config, caplog):
    """Tokenizer training (init=tiny) reads the records first; the malformed ones then reach the dataset's
    skip logic, which counts and logs them (2 of 242 records: under the 1 % limit)."""
    records = json.loads(synth["train"].read_text()) * 5
    (tmp_path / "bad.json").write_text(json.dumps(records + [NO_VALUE, NOT_AN_OBJECT]))
    (tmp_path / "mix.yaml").write_text(
        f"data_path:\n  - {{path: bad.json, all: true, image_root: {synth['train'].parent}}}\n"
    )
    config = make_config(tmp_path / "run", tmp_path / "mix.yaml")
    recipe = SFTRecipe()
    model, tok = build_model(config, texts=lambda: recipe.texts(config))
    dataset, _ = recipe.build_data(config, model, tok)
    assert dataset.num_records == len(records) + 2 and len(dataset) == len(records)
    assert dict(dataset.bad_counts) == {"bad conversation turn": 1, "record is not a JSON object": 1}
    assert f"bad.json record {len(records)} (id='no-value'): bad conversation turn: turn 1" in caplog.text
    assert f"bad.json record {len(records) + 1} (id=None): record is not a JSON object" in caplog.text


@pytest.mark.parametrize(
    "record, reason",
    [
        (NOT_AN_OBJECT, "record is not a JSON object"),
        ({**NO_VALUE, "chosen": "a", "rejected": "b"}, "bad conversation turn: turn 1 has no text value"),
    ],
)
def test_preference_records_get_the_same_check(record, reason):
    with pytest.raises(ValueError, match=f"^p.json record 3 \\(id=.*\\): {reason}"):
        _normalise_preference(record, "p.json record 3 (id=None)")


@pytest.mark.parametrize("problem", ["missing image", "unreadable image"])
def test_unusable_preference_record_is_one_line_exit_2(tmp_path, synth, make_config, capsys, problem):
    """A DPO record whose image is missing (found when the dataset is built) or unreadable (found when the pair
    is loaded) stops the CLI with the file, record and reason on one line (exit 2), not a traceback."""
    folder = synth["dpo_train"].parent
    records = json.loads(synth["dpo_train"].read_text())
    name = problem.replace(" ", "_")
    if problem == "unreadable image":
        (folder / "images" / "not_a_png.png").write_bytes(b"not an image")
    records[2] = dict(
        records[2], image="images/not_a_png.png" if problem == "unreadable image" else "images/nope.png"
    )
    bad = folder / f"prefs_{name}.json"
    bad.write_text(json.dumps(records))
    extra = {"data.image_folder": str(folder), "train.micro_batch_size": 1}
    config = make_config(tmp_path / "run", bad, task="dpo", **extra)
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(to_yaml(config))
    assert main(["dpo", "--config", str(cfg)]) == EXIT_ERROR
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("xgenmm-train:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"prefs_{name}.json record 2" in lines[0] and problem.split()[0] in lines[0], lines[0]
