"""`xgenmm-data check` and `shard` on bad data: one table of problems per source, fatal errors listed at once."""

import json
import re

from PIL import Image

from xgenmm_data.cli import main


def test_check_reports_problems_per_source(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "img" / "ok.jpg")
    (tmp_path / "img" / "zero.jpg").write_bytes(b"")
    (tmp_path / "img" / "text.jpg").write_text("not an image")
    Image.new("RGB", (300, 300)).save(tmp_path / "img" / "trunc.jpg")
    data = (tmp_path / "img" / "trunc.jpg").read_bytes()
    (tmp_path / "img" / "trunc.jpg").write_bytes(data[: len(data) // 2])
    qa = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    recs = [
        {"id": 0, "image": "ok.jpg", "conversations": qa},
        {"id": 1},
        {"id": 2, "conversations": qa[::-1]},
        {"id": 3, "conversations": [qa[0], {"from": "gpt", "value": ""}]},
        {"id": 4, "image": ["ok.jpg", "ok.jpg"], "conversations": qa},
        {
            "id": 5,
            "image": ["ok.jpg"] * 5,
            "conversations": [{"from": "human", "value": "<image>" * 5}, qa[1]],
        },
        {"id": 6, "image": "missing.jpg", "conversations": qa},
        {"id": 7, "image": "zero.jpg", "conversations": qa},
        {"id": 8, "image": "text.jpg", "conversations": qa},
        {"id": 9, "image": "trunc.jpg", "conversations": qa},
        {"id": 10, "image": "/abs/elsewhere/x.jpg", "conversations": qa},
        {"id": 11, "conversations": [{"from": "human", "value": "long " * 3000}, qa[1]]},
    ]
    (tmp_path / "bad.json").write_text(json.dumps(recs))
    (tmp_path / "mix.yaml").write_text("data_path:\n  - {path: bad.json, all: true, image_root: img}\n")
    assert main(["check", str(tmp_path / "mix.yaml")]) == 1
    out = capsys.readouterr().out
    for kind in [
        "record without conversations",
        "wrong role order",
        "empty reply",
        "<image> count != images",
        "more than max_images",
        "missing image file",
        "0-byte image file",
        "not an image",
        "truncated/unreadable image",
        "over-long text",
    ]:
        assert kind in out, kind
    assert "11 problem(s) in 12 record(s)" in out
    assert "bad.json record 1 (id=1): record without conversations" in out
    (tmp_path / "mix2.yaml").write_text("data_path:\n  bad.json: 3\n")
    assert main(["check", str(tmp_path / "mix2.yaml")]) == 1
    assert "unmapped relative image path" in capsys.readouterr().out


def test_check_fatal_lists_all_missing_files(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("[{]")
    (tmp_path / "mix.yaml").write_text("data_path:\n  a.json: 1\n  b.json: 2\n  bad.json: 1\n")
    assert main(["check", str(tmp_path / "mix.yaml")]) == 2
    out = capsys.readouterr().out
    assert "FATAL" in out and "a.json: data file not found" in out and "b.json: data file not found" in out
    assert re.search(r"bad.json:1:\d+: unreadable JSON", out)
    assert main(["shard", "--mixture", str(tmp_path / "mix.yaml"), "--out", str(tmp_path / "s")]) == 2
