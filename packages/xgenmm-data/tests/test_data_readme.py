"""Every block and command of the package README runs as written, in a folder holding the files the README shows
(the `readme` fixture is the repository's conftest.py): the JSON / JSONL / YAML blocks named by their first line,
and the two images the records name."""

import io
import json
import re
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
CHECK, SHARDS, LOADING = (
    "Checking a mixture before training",
    "Writing webdataset shards",
    "Loading for training",
)
PRETRAIN = "Pre-training data: streamed caption and interleaved shards"


def test_every_command_of_the_readme_is_run_below(readme):
    doc = readme.open(README)
    assert doc.sections_with_commands() == ["Install alone", CHECK, SHARDS, PRETRAIN, "Tests"]
    assert len(doc.commands()) == 6 and len(doc.python()) == 2


@pytest.fixture
def folder(readme, tmp_path):
    """The README's files, and the images its records name (mapped by its data_paths.yaml)."""
    written = readme.open(README).write_files(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == {
        "data/llava_sample.json",
        "data/text_only.jsonl",
        "data_configs/my_mix.yaml",
        "data_configs/my_mix_extended.yaml",
        "data_configs/data_paths.yaml",
        "data/docs.jsonl",
        "data_configs/pretrain_mix.yaml",
    }
    for rel in ("images/coco/train2017/000000033471.jpg", "images/vg/VG_100K/1.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (640, 480), (120, 20, 20)).save(tmp_path / rel)
    return tmp_path


def test_check_and_shard_commands_run_as_written(readme, folder):
    doc = readme.open(README)
    for command in doc.commands(CHECK) + doc.commands(SHARDS):
        r = readme.run(command, folder)
        assert r.returncode == 0, (command, r.stdout, r.stderr)
        if " check " in command:
            assert re.search(r"\n0 problem\(s\) in [67] record\(s\)", r.stdout), r.stdout
    assert list((folder / "shards").glob("shard-*.tar"))


class Processor:
    """A real (if simple) image processor: the base image and one 16 px crop per 32 px of width."""

    def __call__(self, image):
        import torch

        w, h = image.size
        pixels = torch.tensor(list(image.convert("RGB").resize((16, 16)).getdata()), dtype=torch.float32)
        return pixels.view(1, 16, 16, 3).permute(0, 3, 1, 2).repeat(self.num_crops((w, h)), 1, 1, 1), (w, h)

    def num_crops(self, size):
        return 1 + max(1, min(3, round(size[0] / max(size[1], 1))))


def test_loading_example_runs_as_written(readme, folder, tokenizer, monkeypatch):
    monkeypatch.chdir(folder)
    scope = {"tokenizer": tokenizer, "processor": Processor(), "rank": 0}
    exec(compile(readme.open(README).python(LOADING)[0], str(README), "exec"), scope)
    assert len(scope["ds"]) == 7  # my_mix.yaml: 5 records drawn from the sample, 2 from the jsonl
    batch = next(iter(scope["loader"]))  # the packed loader: rows of the README's 7 records
    assert batch["input_ids"].shape[0] <= 2 and "segment_ids" in batch


def _img2dataset_shards(folder, n_shards=2, per_shard=6):
    """What img2dataset writes: KEY.jpg + KEY.txt + KEY.json with the caption."""
    folder.mkdir(parents=True)
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as w:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.new("RGB", (64 + 16 * i, 48), (20 * i, 100, 50)).save(buf, format="JPEG")
                cap = f"a photo number {s} {i}"
                meta = {"caption": cap, "key": f"{s:05d}{i:04d}", "status": "success"}
                w.write({"__key__": meta["key"], "jpg": buf.getvalue(), "txt": cap.encode(),
                         "json": json.dumps(meta).encode()})  # fmt: skip


def test_pretraining_stream_commands_and_example_run_as_written(
    readme, folder, tokenizer, helpers, monkeypatch
):
    """The interleaved-shard command, then the ShardStream example on its output and on img2dataset caption
    shards in captions/ (what the README's pretrain_mix.yaml names)."""
    doc = readme.open(README)
    (command,) = doc.commands(PRETRAIN)
    r = readme.run(command, folder)
    assert r.returncode == 0, (command, r.stdout, r.stderr)
    assert [p.name for p in (folder / "shards" / "docs").glob("*.tar")] == ["docs-000000.tar"]
    _img2dataset_shards(folder / "captions")
    monkeypatch.chdir(folder)
    scope = {
        "tokenizer": tokenizer,
        "image_processor": helpers.TinyProcessor(),
        "vision_tokens_for": helpers.vision_tokens,
        "max_steps": 5,
        "checkpoint": {},
    }
    exec(compile(doc.python(PRETRAIN)[0], str(README), "exec"), scope)
    stream, state = scope["stream"], scope["checkpoint"]["data"]
    assert state["num_workers"] == 2 and all(
        w["sources"].keys() == {"captions", "interleaved"} for w in state["workers"]
    )
    assert stream.report()["bad"] == {}
    batch = next(iter(scope["loader"]))  # the resumed loader goes on
    assert batch["input_ids"].shape[0] <= 2 and "stream_state" in batch


@pytest.mark.slow  # a fresh virtual environment and a wheel build (~15 s)
def test_install_command_installs_the_package_alone(readme, tmp_path):
    (command,) = readme.open(README).commands("Install alone")
    python = readme.pip_install(command, tmp_path / "venv")
    assert readme.imported_from(python, ["xgenmm_data"])["xgenmm_data"].startswith(str(tmp_path))


def test_tests_command_is_what_ci_runs(readme):
    (command,) = readme.open(README).commands("Tests")
    assert readme.expand(command, readme.ROOT) == readme.ci_package_tests("xgenmm-data")
