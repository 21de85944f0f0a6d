"""Runs the commands of docs/sections/data.md exactly as written, on the files the doc shows."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from xgenmm_data.cli import main

DOC = Path(__file__).resolve().parents[3] / "docs" / "sections" / "data.md"


def _blocks(text):
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


def _materialise(tmp_path):
    for lang, body in _blocks(DOC.read_text()):
        first, _, rest = body.partition("\n")
        if lang in ("json", "jsonl", "yaml") and first.startswith("# "):
            target = tmp_path / first[2:].strip()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rest)
    for rel in ("images/coco/train2017/000000033471.jpg", "images/vg/VG_100K/1.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (640, 480), (120, 20, 20)).save(tmp_path / rel)


@pytest.mark.skipif(not DOC.exists(), reason="docs/ not present (package installed alone)")
def test_documented_commands_run_as_written(tmp_path):
    _materialise(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    commands = [
        line
        for lang, body in _blocks(DOC.read_text())
        if lang == "bash"
        for line in body.splitlines()
        if line.startswith("xgenmm-data")
    ]
    assert len(commands) == 4
    for cmd in commands:
        r = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        if " check " in cmd:
            assert re.search(r"\n0 problem\(s\) in [67] record\(s\)", r.stdout), r.stdout
    assert list((tmp_path / "shards").glob("shard-*.tar"))
    assert [p.name for p in (tmp_path / "shards" / "docs").glob("*.tar")] == ["docs-000000.tar"]


def _img2dataset_shards(folder, n_shards=2, per_shard=6):
    """What img2dataset writes: KEY.jpg + KEY.txt + KEY.json with the caption."""
    import io
    import json

    import webdataset as wds

    folder.mkdir(parents=True)
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as w:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.new("RGB", (64 + 16 * i, 48), (20 * i, 100, 50)).save(buf, format="JPEG")
                cap = f"a photo number {s} {i}"
                meta = {"caption": cap, "key": f"{s:05d}{i:04d}", "status": "success"}
                w.write(
                    {
                        "__key__": meta["key"],
                        "jpg": buf.getvalue(),
                        "txt": cap.encode(),
                        "json": json.dumps(meta).encode(),
                    }
                )


@pytest.mark.skipif(not DOC.exists(), reason="docs/ not present (package installed alone)")
def test_documented_pretrain_stream_runs_as_written(tmp_path, tokenizer, helpers, monkeypatch):
    _materialise(tmp_path)
    _img2dataset_shards(tmp_path / "captions")
    monkeypatch.chdir(tmp_path)
    assert (
        main(["shard", "--interleaved", "data/docs.jsonl", "--image-root", "images", "--out", "shards/docs/"])
        == 0
    )
    code = next(
        body for lang, body in _blocks(DOC.read_text()) if lang == "python" and "ShardStream(" in body
    )
    scope = {
        "tokenizer": tokenizer,
        "image_processor": helpers.TinyProcessor(),
        "vision_tokens_for": helpers.vision_tokens,
        "max_steps": 5,
        "checkpoint": {},
    }
    exec(code, scope)
    stream, state = scope["stream"], scope["checkpoint"]["data"]
    assert state["num_workers"] == 2 and all(
        w["sources"].keys() == {"captions", "interleaved"} for w in state["workers"]
    )
    assert stream.report()["bad"] == {}
    batch = next(iter(scope["loader"]))  # the resumed loader goes on
    assert batch["input_ids"].shape[0] <= 2 and "stream_state" in batch


def test_check_reports_problems_per_source(tmp_path, capsys):
    _materialise(tmp_path) if DOC.exists() else None
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
    import json

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
