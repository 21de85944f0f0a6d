import json
import random

import pytest

from xgenmm_data import DataError, Mixture, PathMap, load_mixture, load_records, mixture_indices


def _records(n, prefix="r"):
    return [
        {
            "id": f"{prefix}{i}",
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("size,count", [(10, 25), (10, 4), (10, 10), (7, 0)])
def test_mixture_indices_match_python_random(size, count):
    recs = list(range(size))
    expected = (
        random.Random(42).choices(recs, k=count) if count > size else random.Random(42).sample(recs, count)
    )
    assert mixture_indices(size, count, seed=42) == expected


def test_reference_yaml_counts_and_order(tmp_path, helpers):
    a = helpers.write_json(tmp_path / "a.json", _records(10, "a"))
    b = helpers.write_json(tmp_path / "b.json", _records(6, "b"))
    (tmp_path / "mix.yaml").write_text(f"data_path:\n  {a}: 25\n  {b}: 3\n")
    refs = load_mixture(tmp_path / "mix.yaml")
    assert len(refs) == 28
    ids_a = [r.record["id"] for r in refs[:25]]
    assert ids_a == [x["id"] for x in random.Random(42).choices(_records(10, "a"), k=25)]
    ids_b = [r.record["id"] for r in refs[25:]]
    assert ids_b == [x["id"] for x in random.Random(42).sample(_records(6, "b"), 3)]
    assert refs[25].source == b and refs[25].index == int(ids_b[0][1:])


def test_extended_yaml_relative_paths_fraction_all_jsonl_dir(tmp_path, helpers):
    (tmp_path / "d").mkdir()
    helpers.write_json(tmp_path / "d" / "x.json", _records(3, "x"))
    (tmp_path / "d" / "y.jsonl").write_text("\n".join(json.dumps(r) for r in _records(2, "y")) + "\n")
    helpers.write_json(tmp_path / "a.json", _records(10, "a"))
    (tmp_path / "mix.yaml").write_text(
        "seed: 7\ndata_path:\n  - {path: a.json, fraction: 0.5}\n  - {path: d, all: true}\n"
    )
    refs = Mixture.from_yaml(tmp_path / "mix.yaml").load()
    assert [r.record["id"] for r in refs[:5]] == [f"a{i}" for i in random.Random(7).sample(range(10), 5)]
    assert [r.record["id"] for r in refs[5:]] == ["x0", "x1", "x2", "y0", "y1"]
    assert len(load_records(tmp_path / "d")) == 5


def test_missing_files_listed_all_at_once(tmp_path):
    (tmp_path / "mix.yaml").write_text("data_path:\n  nope1.json: 3\n  nope2.json: 4\n")
    with pytest.raises(DataError) as e:
        load_mixture(tmp_path / "mix.yaml")
    assert len(e.value.problems) == 2
    assert "nope1.json: data file not found" in str(e.value) and "nope2.json" in str(e.value)


def test_unreadable_json_names_line_and_column(tmp_path):
    (tmp_path / "bad.json").write_text('[\n {"id": 1,\n  "conversations": oops}\n]')
    with pytest.raises(DataError, match=r"bad.json:3:\d+: unreadable JSON"):
        load_records(tmp_path / "bad.json")
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{broken\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2:\d+: unreadable JSON"):
        load_records(tmp_path / "bad.jsonl")


def test_path_map_first_substring_wins_in_order(tmp_path):
    pm = PathMap(
        {"share_textvqa": "/d/share_textvqa", "textvqa": "/d/textvqa", "train2017": "/coco/train2017"}
    )
    assert pm("share_textvqa/images/1.jpg") == "/d/share_textvqa/images/1.jpg"
    assert pm("textvqa/train_images/1.jpg") == "/d/textvqa/train_images/1.jpg"
    assert (
        pm("coco/train2017/x_train2017.jpg") == "coco//coco/train2017/x_/coco/train2017.jpg"
    )  # all occurrences
    assert pm("ocr_vqa/1.jpg") is None
    # reversed order changes the winner
    assert PathMap({"textvqa": "/T", "share_textvqa": "/S"})("share_textvqa/1.jpg") == "share_/T/1.jpg"


def test_path_map_yaml_and_python_forms(tmp_path):
    (tmp_path / "paths.yaml").write_text("coco/: /data/coco/\nvg/: /data/vg/\n")
    (tmp_path / "paths.py").write_text("IMAGE_FOLDER_DICT = {'coco/': '/data/coco/', 'vg/': '/data/vg/'}\n")
    for f in ("paths.yaml", "paths.py"):
        pm = PathMap.load(tmp_path / f)
        assert list(pm.mapping) == ["coco/", "vg/"]
        assert pm("coco/1.jpg") == "/data/coco/1.jpg"


def test_image_resolution_map_then_root_then_unmapped(tmp_path, helpers):
    recs = [dict(r, image=p) for r, p in zip(_records(3), ["coco/1.jpg", "rel/2.jpg", "/abs/3.jpg"])]
    f = helpers.write_json(tmp_path / "a.json", recs)
    refs = load_mixture(f, path_map={"coco/": "/data/coco/"})
    assert refs[0].images == ["/data/coco/1.jpg"]
    assert refs[1].error.startswith("unmapped relative image path 'rel/2.jpg'")
    assert refs[2].images == ["/abs/3.jpg"]
    refs = load_mixture(f, path_map={"coco/": "/data/coco/"}, image_root="/root")
    assert refs[1].images == ["/root/rel/2.jpg"] and refs[1].error is None


def test_shipped_example_configs_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "data_configs"
    mix = Mixture.from_yaml(root / "example_data_config.yaml")
    assert [s.count for s in mix.sources] == [665298, 50000, 40000]
    a, b = PathMap.load(root / "example_data_paths.yaml"), PathMap.load(root / "example_data_paths.py")
    assert a.mapping == b.mapping
    assert a("share_textvqa/images/x.jpg") == "/data/images/share_textvqa/images/x.jpg"
