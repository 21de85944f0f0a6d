import logging

import pytest
import torch

from xgenmm_data import DataCollator, DataError, SupervisedDataset, get_template


def _ds(data, tokenizer, helpers, **kw):
    return SupervisedDataset(
        data["path"],
        tokenizer,
        helpers.TinyProcessor(),
        helpers.vision_tokens,
        image_root=data["image_root"],
        **kw,
    )


def test_items_follow_the_contract(good_data, tokenizer, helpers):
    ds = _ds(good_data, tokenizer, helpers)
    assert len(ds) == 4 and ds.num_bad == 0
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    for i, rec in enumerate(good_data["records"]):
        item = ds[i]
        ids, labels = item["input_ids"], item["labels"]
        assert ids.dtype == torch.long and ids.shape == labels.shape
        n_img = len(rec["image"]) if isinstance(rec.get("image"), list) else int("image" in rec)
        assert int((ids == image_id).sum()) == n_img == len(item["pixel_values"]) == len(item["image_sizes"])
        for pv in item["pixel_values"]:
            assert pv.dim() == 4 and pv.shape[1] == 3
        vis = sum(helpers.vision_tokens(s) for s in item["image_sizes"])
        assert item["num_tokens"] == len(ids) - n_img + vis == ds.lengths[i]
        assert ds.has_image[i] == bool(n_img)
    # single image without <image> in its text gets "<image>\n" prepended (as the original does)
    text = tokenizer.decode(ds[1]["input_ids"].tolist())
    assert "<|user|><image>\nDescribe the picture." in text.replace("<|user|>\n", "<|user|>")
    # multi-image order: image sizes follow the list
    assert ds[2]["image_sizes"] == [(64, 48), (96, 32)]
    assert ds[3]["pixel_values"] == [] and ds[3]["image_sizes"] == []  # text-only: no dummy image


def test_anyres_like_object_processor_supported(good_data, tokenizer, helpers):
    class Obj:
        def __init__(self, pv, size):
            self.pixel_values, self.image_size = pv, size

    tiny = helpers.TinyProcessor()
    ds = SupervisedDataset(
        good_data["path"], tokenizer, lambda im: Obj(*tiny(im)), helpers.vision_tokens,
        image_root=good_data["image_root"],
    )  # fmt: skip
    assert ds[0]["pixel_values"][0].shape == tiny(__import__("PIL").Image.new("RGB", (64, 48)))[0].shape


def test_truncation_drops_cut_images_and_reports(tmp_path, tokenizer, helpers, caplog):
    recs = [
        {
            "id": "long",
            "image": ["a.jpg", "c.jpg"],
            "conversations": [
                {"from": "human", "value": "<image>\nWhat color? " + "the bus " * 30 + "<image>"},
                {"from": "gpt", "value": "red"},
            ],
        },
        {
            "id": "ok",
            "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "red " * 50}],
        },
    ]
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "img" / "a.jpg")
    Image.new("RGB", (96, 32)).save(tmp_path / "img" / "c.jpg")
    path = helpers.write_json(tmp_path / "t.json", recs)
    with caplog.at_level(logging.INFO, logger="xgenmm_data"):
        ds = SupervisedDataset(
            path, tokenizer, helpers.TinyProcessor(), helpers.vision_tokens, image_root=str(tmp_path / "img"),
            max_length=60, max_bad_fraction=0.6,
        )  # fmt: skip
    # record "long": its reply is cut away -> no supervised tokens -> bad; "ok" is truncated in its reply
    assert ds.bad_counts and "no supervised tokens" in ds.bad_records[0][3]
    assert ds.num_truncated == 1 and len(ds) == 1
    item = ds[0]
    assert len(item["input_ids"]) == 60 and (item["labels"] != -100).any()
    assert "truncated from" in caplog.text


def test_truncation_keeps_image_block_consistent(tmp_path, tokenizer, helpers):
    conv = [
        {"from": "human", "value": "<image>\nWhat color?"},
        {"from": "gpt", "value": "red"},
        {"from": "human", "value": "and <image> " + "the bus " * 30},
        {"from": "gpt", "value": "blue"},
    ]
    recs = [{"id": "x", "image": ["a.jpg", "c.jpg"], "conversations": conv}]
    helpers.make_image((tmp_path / "a.jpg"), (64, 48))
    helpers.make_image((tmp_path / "c.jpg"), (96, 32))
    path = helpers.write_json(tmp_path / "t.json", recs)
    tmpl = get_template("phi_3").render(conv[:2])
    n_first = len(tokenizer(tmpl, add_special_tokens=False)["input_ids"])
    ds = SupervisedDataset(
        path, tokenizer, helpers.TinyProcessor(), helpers.vision_tokens, image_root=str(tmp_path),
        max_length=n_first + 3,
    )  # fmt: skip
    item = ds[0]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    n_tok = int((item["input_ids"] == image_id).sum())
    assert n_tok == len(item["pixel_values"]) == len(item["image_sizes"])
    assert n_tok in (1, 2)
    assert ds.lengths[0] == item["num_tokens"]


def test_plain_and_packed_collation(good_data, tokenizer, helpers):
    ds = _ds(good_data, tokenizer, helpers)
    pad = tokenizer.pad_token_id
    col = DataCollator(pad)
    batch = col([ds[0], ds[3], None])  # None = a skipped sample
    L = max(len(ds[0]["input_ids"]), len(ds[3]["input_ids"]))
    assert batch["input_ids"].shape == (2, L) and batch["attention_mask"].dtype == torch.long
    n3 = len(ds[3]["input_ids"])
    assert batch["input_ids"][1, n3:].eq(pad).all() and batch["labels"][1, n3:].eq(-100).all()
    assert batch["attention_mask"][1].sum() == n3
    assert len(batch["pixel_values"][0]) == 1 and batch["pixel_values"][1] == []
    assert set(batch) == {"input_ids", "attention_mask", "labels", "pixel_values", "image_sizes"}

    rows = ds[[[0, 2], [3]]] if False else [ds[[0, 2]], ds[[3]]]
    packed = col(rows)
    a, b, c = (len(ds[i]["input_ids"]) for i in (0, 2, 3))
    assert packed["input_ids"].shape == (2, max(a + b, c))
    assert packed["position_ids"][0, :a].tolist() == list(range(a))
    assert packed["position_ids"][0, a : a + b].tolist() == list(range(b))
    assert packed["segment_ids"][0, :a].eq(0).all() and packed["segment_ids"][0, a : a + b].eq(1).all()
    assert packed["segment_ids"][1, c:].eq(-1).all()
    assert torch.equal(packed["input_ids"][0, a : a + b], ds[2]["input_ids"])  # no sample split
    assert packed["labels"][0, a] == -100
    assert packed["image_sizes"][0] == ds[0]["image_sizes"] + ds[2]["image_sizes"]
    assert len(packed["pixel_values"][0]) == 3


@pytest.mark.parametrize(
    "record,reason",
    [
        ({"id": "nc"}, "record without conversations"),
        ({"id": "order", "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
         "wrong role order"),
        ({"id": "empty", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}]},
         "empty reply"),
        ({"id": "count", "image": ["a.jpg", "a.jpg"],
          "conversations": [{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "a"}]},
         "<image> count 1 != number of images 2"),
        ({"id": "many", "image": ["a.jpg"] * 5,
          "conversations": [{"from": "human", "value": "<image>" * 5}, {"from": "gpt", "value": "a"}]},
         "5 images > max_images=4"),
        ({"id": "textimg", "conversations": [{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "a"}]},
         "<image> in a record without images"),
        ({"id": "missing", "image": "nope.jpg",
          "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
         "missing image file"),
        ({"id": "zero", "image": "zero.jpg",
          "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
         "0-byte image file"),
        ({"id": "notimg", "image": "notimg.jpg",
          "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
         "not an image"),
        ({"id": "unmapped", "image": "rel/x.jpg",
          "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
         "unmapped relative image path"),
    ],
)  # fmt: skip
def test_bad_records_are_skipped_logged_and_counted(tmp_path, tokenizer, helpers, caplog, record, reason):
    good = helpers.write_json(tmp_path / "g.json", [])
    (tmp_path / "img").mkdir()
    helpers.make_image(tmp_path / "img" / "a.jpg")
    (tmp_path / "img" / "zero.jpg").write_bytes(b"")
    (tmp_path / "img" / "notimg.jpg").write_text("hello, not a jpeg")
    good_recs = [
        {"id": f"g{i}", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
        for i in range(9)
    ]
    path = helpers.write_json(tmp_path / "d.json", good_recs[:4] + [record] + good_recs[4:])
    root = None if record["id"] == "unmapped" else str(tmp_path / "img")
    with caplog.at_level(logging.WARNING, logger="xgenmm_data"):
        ds = SupervisedDataset(
            path, tokenizer, helpers.TinyProcessor(), helpers.vision_tokens, image_root=root, max_bad_fraction=0.2,
            path_map={"a.jpg": str(tmp_path / "img" / "a.jpg")} if root is None else None,
        )  # fmt: skip
    assert len(ds) == 9 and ds.num_bad == 1  # the run continues without it, and without a neighbour copy
    assert [r.record["id"] for r in ds.samples] == [f"g{i}" for i in range(9)]
    assert f"d.json record 4 (id='{record['id']}')" in caplog.text
    assert reason in caplog.text and reason in ds.bad_records[0][3]
    del good
    # the same data with a 1 % limit stops before step 0
    with pytest.raises(DataError, match=r"1 of 10 records are bad \(10.00% > max_bad_fraction 1.00%\)"):
        SupervisedDataset(
            path, tokenizer, helpers.TinyProcessor(), helpers.vision_tokens, image_root=root,
            path_map={"a.jpg": str(tmp_path / "img" / "a.jpg")} if root is None else None,
        )  # fmt: skip


def test_truncated_image_skipped_at_load_time(tmp_path, tokenizer, helpers, caplog):
    helpers.make_image(tmp_path / "t.jpg", (300, 200))
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    recs = [
        {
            "id": "trunc",
            "image": "t.jpg",
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
        }
    ] + [{"id": "ok", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}] * 3
    path = helpers.write_json(tmp_path / "d.json", recs)
    ds = SupervisedDataset(
        path,
        tokenizer,
        helpers.TinyProcessor(),
        helpers.vision_tokens,
        image_root=str(tmp_path),
        max_bad_fraction=0.5,
    )
    assert len(ds) == 4  # the header is fine
    with caplog.at_level(logging.WARNING, logger="xgenmm_data"):
        assert ds[0] is None
    assert "unreadable image" in caplog.text and "truncated" in caplog.text and ds.num_bad == 1
    with caplog.at_level(logging.WARNING, logger="xgenmm_data"):
        assert ds[0] is None  # a later epoch: not decoded, logged or counted again
    assert caplog.text.count("unreadable image") == 1 and ds.num_bad == 1
    assert DataCollator(0)([ds[0], ds[1]])["input_ids"].shape[0] == 1
    ds.max_bad_fraction = 0.01
    with pytest.raises(DataError, match="records are bad"):
        ds[0]
