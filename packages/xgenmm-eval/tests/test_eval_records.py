"""Eval record parsing and prompt/image placement (no model needed)."""

import json

import pytest
from PIL import Image

from xgenmm_eval.prompting import interleave_message, load_image, place_images
from xgenmm_eval.records import load_eval_records


def _write(tmp_path, records, name="eval.json"):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    else:
        path.write_text(json.dumps(records))
    return path


def test_records_reference_query_history_and_images(tmp_path):
    recs = [
        {
            "id": "a",
            "image": "img/1.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour?"},
                {"from": "gpt", "value": "red"},
                {"from": "human", "value": "And the roof?"},
                {"from": "gpt", "value": "blue"},
            ],
            "question_type": "color",
        },
        {"id": "b", "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}],
         "answers": ["4", "four"], "category": "math"},
    ]  # fmt: skip
    a, b = load_eval_records(_write(tmp_path, recs))
    assert a.id == "a" and a.query == "And the roof?" and a.references == ["blue"]
    assert a.history == [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]
    assert a.images == [tmp_path / "img/1.jpg"] and a.question_type == "color"
    assert b.references == ["4", "four"] and b.question_type == "math" and b.images == [] and b.history == []


def test_records_single_image_placeholder_rule_and_image_folder(tmp_path):
    # two placeholders for one image -> all removed, "<image>\n" put in front (the training rule)
    recs = [{"image": "x.png", "conversations": [{"from": "human", "value": "Look <image> and <image> here "},
                                                 {"from": "gpt", "value": "ok"}]}]  # fmt: skip
    (rec,) = load_eval_records(_write(tmp_path, recs, "e.jsonl"), image_folder="/data/imgs")
    assert rec.query == "<image>\nLook  and  here"
    assert str(rec.images[0]) == "/data/imgs/x.png"
    assert rec.id.endswith("record 0") and rec.question_type == "all"


@pytest.mark.parametrize(
    "record, message",
    [
        ({"conversations": [{"from": "human", "value": "q"}]}, "no 'gpt' turn"),
        ({"conversations": [{"from": "gpt", "value": "a"}]}, "must follow a 'human' turn"),
        ({"image": ["a.png", "b.png"], "conversations": [{"from": "human", "value": "<image> q"},
                                                         {"from": "gpt", "value": "a"}]}, "1 <image> placeholder(s) for 2"),
        ({"conversations": [{"from": "bot", "value": "q"}]}, "turn 0"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "answers": []}, "answers"),
    ],
)  # fmt: skip
def test_records_bad_input_names_file_and_record(tmp_path, record, message):
    path = _write(tmp_path, [{"conversations": [{"from": "human", "value": "ok"}, {"from": "gpt", "value": "a"}]},
                             record])  # fmt: skip
    with pytest.raises(ValueError, match="record 1") as err:
        load_eval_records(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_interleave_message_vlmevalkit_layout():
    msg = [
        {"type": "text", "value": "Compare "},
        {"type": "image", "value": "a.jpg"},
        {"type": "text", "value": "with"},
        {"type": "image", "value": "b.jpg"},
        {"type": "text", "value": "Which is larger?"},
    ]
    query, images = interleave_message(msg)
    assert query == "Compare <image> with<image> Which is larger?"
    assert images == ["a.jpg", "b.jpg"]
    with pytest.raises(ValueError, match="item 0"):
        interleave_message([{"type": "video", "value": "v.mp4"}])


def test_place_images():
    assert place_images("What?", 2) == "<image>\n<image>\nWhat?"
    assert place_images("What?", 1, sep=" ") == "<image> What?"
    assert place_images("A <image> B <image>", 2) == "A <image> B <image>"
    assert place_images("no images", 0) == "no images"
    with pytest.raises(ValueError, match="1 <image> placeholder"):
        place_images("A <image>", 2)


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        load_image(bad)
    Image.new("L", (5, 4)).save(tmp_path / "g.png")
    im = load_image(str(tmp_path / "g.png"))
    assert im.mode == "RGB" and im.size == (5, 4)


def test_load_image_scales_16bit_grey_like_training(tmp_path):
    """A 16-bit PNG (mode I;16) is scaled to 8 bits, as the training pipeline does (convert("RGB") clips it
    to almost white)."""
    import numpy as np
    from PIL import Image

    a = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    for source in (tmp_path / "g16.png", Image.open(tmp_path / "g16.png")):
        assert np.asarray(load_image(source))[0, :, 0].tolist() == [0, 1, 128, 255]


def test_non_utf8_eval_file_names_file_and_byte_offset(tmp_path):
    data = b'[{"id": 0, "conversations": [{"from": "human", "value": "caf\xe9?"}, {"from": "gpt", "value": "a"}]}]'
    (tmp_path / "e.json").write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(ValueError) as err:
        load_eval_records(tmp_path / "e.json")
    assert str(err.value).startswith(f"{tmp_path / 'e.json'}: invalid UTF-8 at byte offset {offset}")
