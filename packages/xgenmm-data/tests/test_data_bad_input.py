"""Bad input the data package meets: invalid UTF-8 data files, malformed records, image modes that
`convert("RGB")` gets wrong or changes, and a Python path-map file that must not be executed."""

import json

import numpy as np
import pytest
from PIL import Image

from xgenmm_data import BadSample, DataError, Mixture, PathMap, SupervisedDataset, record_messages
from xgenmm_data.check import check_mixture
from xgenmm_data.cli import main
from xgenmm_data.processing import open_image, to_rgb

QA = [{"from": "human", "value": "What is it?"}, {"from": "gpt", "value": "A thing."}]


# -- non-UTF-8 data files --------------------------------------------------------------------------------


def _latin1_json(tmp_path):
    good = json.dumps([{"id": 0, "conversations": QA}])
    data = good[:-1].encode() + b', {"id": 1, "conversations": [{"from": "human", "value": "caf\xe9"}]}]'
    (tmp_path / "bad.json").write_bytes(data)
    return tmp_path / "bad.json", data.index(b"\xe9")


def test_non_utf8_json_is_fatal_with_byte_offset(tmp_path, capsys):
    path, offset = _latin1_json(tmp_path)
    assert main(["check", str(path)]) == 2
    out = capsys.readouterr().out
    assert "FATAL" in out
    assert f"{path}: invalid UTF-8 at byte offset {offset} (invalid continuation byte)" in out
    assert main(["shard", str(path), "--out", str(tmp_path / "s")]) == 2


def test_non_utf8_jsonl_is_fatal_with_byte_offset_in_the_file(tmp_path, capsys):
    lines = [json.dumps({"id": i, "conversations": QA}).encode() + b"\n" for i in range(3)]
    lines[2] = lines[2].replace(b"A thing.", b"A \xff thing.")
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(lines))
    offset = b"".join(lines).index(b"\xff")
    (tmp_path / "mix.yaml").write_text("data_path:\n  - {path: bad.jsonl, all: true}\n")
    assert main(["check", str(tmp_path / "mix.yaml")]) == 2
    assert f"{path}: invalid UTF-8 at byte offset {offset} (invalid start byte)" in capsys.readouterr().out


def test_non_utf8_data_stops_the_training_dataset(tmp_path):
    """The training path (SupervisedDataset over a mixture) raises the same DataError, not UnicodeDecodeError."""
    path, offset = _latin1_json(tmp_path)
    with pytest.raises(DataError, match=f"invalid UTF-8 at byte offset {offset}"):
        SupervisedDataset(str(path), tokenizer=None)  # fails reading, before any tokenization


# -- malformed records -----------------------------------------------------------------------------------


def test_record_messages_validates_what_every_reader_reads():
    assert record_messages({"conversations": QA}) == [
        {"role": "user", "content": "What is it?"},
        {"role": "assistant", "content": "A thing."},
    ]
    assert record_messages({"prompt": "p", "chosen": "a", "rejected": "b"}) == []
    for record, reason in [
        (5, "record is not a JSON object"),
        (["a"], "record is not a JSON object"),
        ({"conversations": [{"from": "human"}]}, "turn 0 has no text value"),
        ({"conversations": ["hi"]}, "turn 0 is not an object"),
        ({"conversations": [{"from": "robot", "value": "x"}]}, "turn 0 has unknown role 'robot'"),
        ({"conversations": "hi"}, "conversations is a str, not a list"),
    ]:
        with pytest.raises(BadSample, match=reason):
            record_messages(record)


def test_check_reports_malformed_records(tmp_path, capsys):
    recs = [{"id": 0, "conversations": QA}, 7, {"id": 2, "conversations": [QA[0], {"from": "gpt"}]}]
    (tmp_path / "m.json").write_text(json.dumps(recs))
    assert main(["check", str(tmp_path / "m.json")]) == 1
    out = capsys.readouterr().out
    assert "m.json record 1 (id=None): record is not a JSON object" in out
    assert "m.json record 2 (id=2): bad conversation turn: turn 1 has no text value" in out


# -- image modes -----------------------------------------------------------------------------------------


def _gradient16(path):
    """A 16-bit grey PNG (mode I;16) with values 0..65280 in steps of 256, and its exact 8-bit equivalent."""
    a = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 256).astype(np.uint16)
    Image.fromarray(a).save(path)
    return np.round(a / 257).astype(np.uint8)


def test_16bit_png_is_scaled_to_8_bits(tmp_path):
    want = _gradient16(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16"
    rgb = open_image(str(tmp_path / "g16.png"))
    assert rgb.mode == "RGB"
    got = np.asarray(rgb)
    assert (got == want[..., None]).all()  # convert("RGB") would clip: ~all 255
    assert got.mean() == pytest.approx(127, abs=1)


@pytest.mark.parametrize("mode", ["I;16B", "I", "F"])
def test_other_high_bit_depth_modes_are_scaled(mode):
    a = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    im = Image.fromarray(a).convert("I")
    if mode == "F":
        im = Image.fromarray(a.astype(np.float32) / 65535)  # a float image in [0, 1]
    elif mode != "I":
        im = im.convert(mode)
    assert im.mode == mode
    assert np.asarray(to_rgb(im))[0, :, 0].tolist() == [0, 1, 128, 255]


def _mode_images(folder):
    """Images whose pixels the pipeline changes: {file: note kind}."""
    folder.mkdir()
    rgba = Image.new("RGBA", (8, 8), (10, 200, 30, 0))
    rgba.save(folder / "rgba.png")
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 250, 10, 10] + [0] * 762)
    pal.save(folder / "pal.png", transparency=1)
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    _gradient16(folder / "g16.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "plain.png")
    return {
        "rgba.png": "alpha channel (dropped by convert('RGB'))",
        "pal.png": "transparent colour (dropped by convert('RGB'))",
        "cmyk.jpg": "CMYK image (converted to RGB without a colour profile)",
        "anim.gif": "animated image (first frame only)",
        "g16.png": "I;16 image (scaled to 8 bits)",
    }


def test_converted_image_modes_keep_convert_rgb_pixels(tmp_path):
    kinds = _mode_images(tmp_path / "img")
    for name in kinds:
        if name == "g16.png":
            continue
        with Image.open(tmp_path / "img" / name) as im:
            im.load()
            want = np.asarray(im.convert("RGB"))
        assert (np.asarray(open_image(str(tmp_path / "img" / name))) == want).all(), name


def test_check_counts_image_conversions_per_source(tmp_path, capsys):
    kinds = _mode_images(tmp_path / "img")
    names = [*kinds, "plain.png", "rgba.png"]
    recs = [{"id": i, "image": n, "conversations": QA} for i, n in enumerate(names)]
    (tmp_path / "a.json").write_text(json.dumps(recs))
    (tmp_path / "b.json").write_text(json.dumps(recs[-2:]))
    (tmp_path / "mix.yaml").write_text(
        "image_root: img\ndata_path:\n  - {path: a.json, all: true}\n  - {path: b.json, all: true}\n"
    )
    report = check_mixture(Mixture.from_yaml(tmp_path / "mix.yaml"))
    assert report.ok  # conversions are not problems
    a, b = (str(tmp_path / f) for f in ("a.json", "b.json"))
    want_a = {kind: 1 for kind in kinds.values()}
    want_a["alpha channel (dropped by convert('RGB'))"] = 2
    assert dict(report.notes[a]) == want_a
    assert dict(report.notes[b]) == {"alpha channel (dropped by convert('RGB'))": 1}
    assert main(["check", str(tmp_path / "mix.yaml"), "--no-decode"]) == 0
    out = capsys.readouterr().out
    assert "image conversions (not errors" in out
    assert f"{a}: 2 x alpha channel (dropped by convert('RGB'))" in out
    assert f"{a}: 1 x I;16 image (scaled to 8 bits)" in out
    assert f"{b}: 1 x alpha channel (dropped by convert('RGB'))" in out


# -- the Python path map is parsed, not executed ---------------------------------------------------------


def test_python_path_map_is_not_executed(tmp_path):
    marker = tmp_path / "ran"
    src = (
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('executed')\n"
        'IMAGE_FOLDER_DICT: dict = {"coco/": "/data/coco/", "vg/": "/data/vg/"}\n'
    )
    (tmp_path / "paths.py").write_text(src)
    pm = PathMap.load(tmp_path / "paths.py")
    assert not marker.exists()
    assert pm.mapping == {"coco/": "/data/coco/", "vg/": "/data/vg/"}
    assert pm("vg/1.jpg") == "/data/vg/1.jpg"
    (tmp_path / "gcp.py").write_text('IMAGE_FOLDER_DICT_GCP = {"a": "/b"}\n')
    assert PathMap.load(tmp_path / "gcp.py").mapping == {"a": "/b"}


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "import os\nIMAGE_FOLDER_DICT = {'a': os.getcwd()}\n",
            ":2: IMAGE_FOLDER_DICT must be a literal dict",
        ),
        ("BASE = {'a': '/b'}\nIMAGE_FOLDER_DICT = BASE\n", ":2: IMAGE_FOLDER_DICT must be a literal dict"),
        ("IMAGE_FOLDER_DICT = {'a': 1}\n", ":1: IMAGE_FOLDER_DICT must be a literal dict"),
        ("IMAGE_FOLDER_DICT = ['a']\n", ":1: IMAGE_FOLDER_DICT must be a literal dict"),
        ("PATHS = {'a': '/b'}\n", ": defines no IMAGE_FOLDER_DICT"),
        ("IMAGE_FOLDER_DICT = {\n", ":1: path map is not valid Python"),
    ],
)
def test_python_path_map_rejects_anything_but_a_literal_dict(tmp_path, capsys, body, message):
    (tmp_path / "paths.py").write_text(body)
    with pytest.raises(DataError, match=message):
        PathMap.load(tmp_path / "paths.py")
    (tmp_path / "d.json").write_text(json.dumps([{"id": 0, "conversations": QA}]))
    assert main(["check", str(tmp_path / "d.json"), "--path-map", str(tmp_path / "paths.py")]) == 2
    assert f"{tmp_path / 'paths.py'}{message}" in capsys.readouterr().err
