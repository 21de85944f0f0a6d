"""Streamed pre-training data: img2dataset caption shards, interleaved shards, weighted mixtures, the split over
ranks and workers, bad members, and exact resume."""

import io
import json

import pytest
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from xgenmm_data import (
    DataCollator,
    PackedRows,
    PretrainProcessor,
    ShardStream,
    StreamMixture,
    caption_text,
    interleaved_text,
    iter_shard,
    parse_sample,
    split_shards,
)
from xgenmm_data.cli import main
from xgenmm_data.processing import BadSample

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def image_bytes(k, fmt="JPEG", size=(40, 24)):
    buf = io.BytesIO()
    Image.new("RGB", size, COLORS[k % 4]).save(buf, format=fmt)
    return buf.getvalue()


def write_caption_shards(folder, n_shards, per_shard, prefix="cap"):
    """Shards laid out like img2dataset's output: KEY.jpg|png|webp, KEY.txt and/or KEY.json {"caption"}."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"{prefix}-{s:05d}.tar")) as w:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                ext, fmt = [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")][i % 3]
                sample = {"__key__": key, ext: image_bytes(i, fmt, (40 + i % 5 * 8, 24))}
                caption = f"a shape number {key}"
                if i % 2:
                    sample["txt"] = caption.encode()
                sample["json"] = json.dumps({"caption": caption, "key": key, "status": "success"}).encode()
                w.write(sample)
                keys.append(key)
    return keys


def test_text_layout_matches_open_flamingo():
    assert caption_text("  A red bus. ") == "<image>A red bus.<|endofchunk|>"
    text, n = interleaved_text(["Intro.", None, " About the bus. ", None, "About the cat."])
    assert n == 2
    assert text == "Intro.<image>About the bus.<|endofchunk|><image>About the cat.<|endofchunk|>"
    assert (
        interleaved_text([None, None, "Two images."])[0]
        == "<image><|endofchunk|><image>Two images.<|endofchunk|>"
    )
    # txt wins, json caption is the fallback
    jpg = image_bytes(0)
    assert parse_sample({"jpg": jpg, "txt": b"from txt", "json": b'{"caption": "x"}'})[1] == caption_text(
        "from txt"
    )
    assert parse_sample({"jpg": jpg, "json": b'{"caption": "from json"}'})[1] == caption_text("from json")
    for parts, reason in [
        ({"jpg": jpg, "txt": b"  "}, "empty caption"),
        ({"jpg": jpg}, "missing pair: no caption"),
        ({"txt": b"a cat"}, "missing pair: no image"),
        ({"jpg": jpg, "txt": b"see <image> here"}, "contains the marker <image>"),
        ({"jpg": jpg, "txt": b"\xff\xfe"}, "not UTF-8"),
    ]:
        with pytest.raises(BadSample, match=reason):
            parse_sample(parts)


def test_caption_shards_read_as_img2dataset_writes_them(tmp_path):
    keys = write_caption_shards(tmp_path / "caps", 3, 10)
    samples = list(ShardStream({"shuffle": 0, "epochs": 1, "streams": {"caps": str(tmp_path / "caps")}}))
    assert [s["key"] for s in samples] == keys  # no shuffle: shard order, tar order
    assert samples[0]["text"] == f"<image>a shape number {keys[0]}<|endofchunk|>"
    assert all(s["kind"] == "caption" and len(s["images"]) == 1 for s in samples)
    assert samples[2]["images"][0] == image_bytes(2, "WEBP", (56, 24))
    # pipe: URLs (an object store's CLI) stream the same samples, skipping without seeking
    piped = [f"pipe:cat {p}" for p in sorted((tmp_path / "caps").glob("*.tar"))]
    stream = ShardStream({"shuffle": 0, "epochs": 1, "streams": {"caps": {"urls": piped}}})
    assert [s["key"] for s in stream] == keys
    assert [key for _, key, *_ in iter_shard(piped[1], start=3, stop=5)] == keys[13:15]
    assert [i for i, *_ in iter_shard(piped[1], only={2, 7})] == [2, 7]
    # in a local shard the reader jumps to known sample starts (resume); the byte offsets agree with a stream
    local = sorted((tmp_path / "caps").glob("*.tar"))[1]
    full = list(iter_shard(local))
    assert [x[3:] for x in iter_shard(piped[1])] == [x[3:] for x in full] and full[0][3] == 0
    at = {i: begin for i, _, _, begin, _ in full}
    assert list(iter_shard(local, only={2, 7}, at={2: at[2], 7: at[7]})) == [full[2], full[7]]
    assert list(iter_shard(local, start=5, at={5: full[4][4]})) == full[5:]


def test_bad_members_and_unreadable_shards_are_skipped_and_reported(tmp_path, tokenizer, helpers, caplog):
    folder = tmp_path / "caps"
    write_caption_shards(folder, 1, 6)
    with wds.TarWriter(str(folder / "cap-00001.tar")) as w:
        w.write({"__key__": "bad-image", "jpg": b"not a jpeg", "txt": b"a cat"})
        w.write({"__key__": "empty", "jpg": image_bytes(0), "txt": b" "})
        w.write({"__key__": "no-caption", "png": image_bytes(1, "PNG")})
        w.write({"__key__": "no-image", "txt": b"a caption alone"})
        w.write({"__key__": "good", "jpg": image_bytes(2), "txt": b"a good one"})
    (folder / "cap-00002.tar").write_bytes(b"this is not a tar file at all" * 40)
    urls = [str(folder / f"cap-0000{i}.tar") for i in range(3)] + [str(folder / "missing.tar")]
    proc = PretrainProcessor(tokenizer, helpers.TinyProcessor(), helpers.vision_tokens)
    stream = ShardStream({"shuffle": 0, "epochs": 1, "streams": {"caps": {"urls": urls}}}, processor=proc)
    items = list(stream)
    assert len(items) == 7  # 6 good + "good"
    report = stream.report()
    assert report["samples"] == 11
    assert report["bad"] == {
        "unreadable image <bytes>": 1,
        "empty caption": 1,
        "missing pair": 2,
        "unreadable shard": 2,
    }
    examples = {e[2]: e for e in report["bad_examples"]}
    assert examples["bad-image"][1] == urls[1] and examples["no-image"][3].startswith(
        "missing pair: no image"
    )
    assert [e[0] for e in report["shard_errors"]] == [urls[2], urls[3]]
    assert "skipping caps sample no-caption in shard " + urls[1] in caplog.text
    assert f"cannot read shard {urls[3]}" in caplog.text


def test_interleaved_jsonl_to_shards_to_items(tmp_path, tokenizer, helpers, capsys):
    (tmp_path / "img").mkdir()
    for k in range(3):
        helpers.make_image(tmp_path / "img" / f"{k}.png", (32 + 16 * k, 32), COLORS[k])
    docs = [
        {
            "texts": ["Intro.", None, "About the bus.", None, "About the cat."],
            "images": [None, "img/0.png", None, "img/1.png", None],
            "id": "d0",
        },
        {"texts": [None, "One image first."], "images": ["img/2.png", None]},
        {"texts": ["both", None], "images": ["img/0.png", None]},  # position 0 has both
        {"texts": ["no such image", None], "images": [None, "img/missing.png"]},
        {"texts": ["text only"], "images": [None]},
    ]
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n{broken\n")
    code = main(
        [
            "shard",
            "--interleaved",
            str(tmp_path / "docs.jsonl"),
            "--out",
            str(tmp_path / "shards"),
            "--max-bad-fraction",
            "0.9",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "wrote 2 documents to 1 shard(s)" in out
    assert "line 3: position 0: exactly one of texts[0] / images[0] must be non-null" in out
    assert "line 4: missing image file" in out and "line 5: document without images" in out
    assert "line 6: unreadable JSON" in out
    # the default limit (1 %) fails the command
    assert main(["shard", "--interleaved", str(tmp_path / "docs.jsonl"), "--out", str(tmp_path / "s2")]) == 1

    samples = list(
        ShardStream(
            {
                "shuffle": 0,
                "epochs": 1,
                "streams": {"docs": {"urls": str(tmp_path / "shards"), "kind": "interleaved"}},
            }
        )
    )
    assert [s["text"] for s in samples] == [
        "Intro.<image>About the bus.<|endofchunk|><image>About the cat.<|endofchunk|>",
        "<image>One image first.<|endofchunk|>",
    ]
    assert samples[0]["images"] == [
        (tmp_path / "img" / "0.png").read_bytes(),
        (tmp_path / "img" / "1.png").read_bytes(),
    ]

    proc = PretrainProcessor(tokenizer, helpers.TinyProcessor(), helpers.vision_tokens)
    item = proc(samples[0])
    image_id, eoc_id = tokenizer.convert_tokens_to_ids(["<image>", "<|endofchunk|>"])
    ids, labels = item["input_ids"], item["labels"]
    assert int((ids == image_id).sum()) == 2 and len(item["pixel_values"]) == 2
    assert item["image_sizes"] == [(32, 32), (48, 32)]
    assert item["num_tokens"] == len(ids) - 2 + helpers.vision_tokens((32, 32)) + helpers.vision_tokens(
        (48, 32)
    )
    # the loss is on text tokens only: image tokens masked; <|endofchunk|> and the end-of-text trained
    assert (labels[ids == image_id] == -100).all()
    assert (labels[ids != image_id] == ids[ids != image_id]).all()
    assert ids[-1] == tokenizer.eos_token_id and (ids == eoc_id).sum() == 2
    masked = PretrainProcessor(
        tokenizer, helpers.TinyProcessor(), helpers.vision_tokens, endofchunk_loss=False
    )
    assert (masked(samples[0])["labels"][ids == eoc_id] == -100).all()
    # max_images keeps the first images and all text; truncation drops images whose <image> was cut
    one = PretrainProcessor(tokenizer, helpers.TinyProcessor(), helpers.vision_tokens, max_images=1)(
        samples[0]
    )
    assert int((one["input_ids"] == image_id).sum()) == 1 and len(one["pixel_values"]) == 1
    assert tokenizer.decode(one["input_ids"]).count("cat") == 1
    first = int((ids == image_id).nonzero()[1])
    cut = PretrainProcessor(tokenizer, helpers.TinyProcessor(), helpers.vision_tokens, max_length=first)(
        samples[0]
    )
    assert len(cut["input_ids"]) == first and len(cut["pixel_values"]) == 1


def _mixture(tmp_path, **kw):
    write_caption_shards(tmp_path / "caps", 4, 25)
    write_caption_shards(tmp_path / "more", 2, 25, prefix="more")
    cfg = {
        "seed": 7,
        "shuffle": 10,
        "streams": {
            "captions": {"urls": "caps/cap-{00000..00003}.tar", "weight": 0.6, "kind": "caption"},
            "more": {"urls": ["more/more-00000.tar", "more/more-00001.tar"], "weight": 0.4},
        },
        **kw,
    }
    (tmp_path / "mix.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    return StreamMixture.from_yaml(tmp_path / "mix.yaml")


def test_mixture_yaml_weights_and_epochs(tmp_path):
    mix = _mixture(tmp_path)
    assert [s.name for s in mix.sources] == ["captions", "more"] and len(mix.sources[0].urls) == 4
    stream = iter(ShardStream(mix))
    first = [next(stream) for _ in range(1000)]  # streams forever; each source runs its own epochs
    share = sum(s["source"] == "captions" for s in first) / len(first)
    assert 0.55 < share < 0.65
    one_epoch = list(ShardStream(_mixture(tmp_path, epochs=1)))
    keys = [(s["source"], s["key"]) for s in one_epoch]
    assert len(keys) == len(set(keys)) == 150
    assert keys != sorted(keys)  # shuffled
    with pytest.raises(Exception, match="weight must be > 0"):
        StreamMixture.from_config({"streams": {"a": {"urls": ["x.tar"], "weight": 0}}})


def test_shards_split_over_ranks_and_workers_cover_the_epoch(tmp_path, monkeypatch):
    urls = [f"s{i}.tar" for i in range(11)]
    for rank in range(2):
        for worker in range(3):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            monkeypatch.setenv("WORKER", str(worker))
            monkeypatch.setenv("NUM_WORKERS", "3")
            assert split_shards(urls, rank, 2, worker, 3) == list(
                wds.split_by_worker(wds.split_by_node(urls))
            )
    monkeypatch.delenv("WORKER")
    monkeypatch.delenv("NUM_WORKERS")
    mix = _mixture(tmp_path, epochs=1)
    seen = []
    for rank in range(2):
        stream = ShardStream(mix, rank=rank, world_size=2)
        for sample in DataLoader(stream, batch_size=None, num_workers=2):
            seen.append((sample["source"], sample["key"], rank))
    assert len(seen) == 150 and len({(s, k) for s, k, _ in seen}) == 150
    by_rank = [{(s, k) for s, k, r in seen if r == rank} for rank in range(2)]
    assert not by_rank[0] & by_rank[1] and by_rank[0] and by_rank[1]


def _key(element):
    return [[it["input_ids"].tolist() for it in row] for row in element["rows"]]


def _packed_stream(mix, tokenizer, helpers, calls=None):
    proc = PretrainProcessor(tokenizer, helpers.TinyProcessor(), helpers.vision_tokens)

    def processor(sample):
        if calls is not None:
            calls.append(sample["key"])
        return proc(sample)

    return ShardStream(mix, processor=processor, batcher=PackedRows(90, rows_per_batch=2, pool_size=6))


def test_exact_resume_in_process(tmp_path, tokenizer, helpers):
    mix = _mixture(tmp_path)
    reference = iter(_packed_stream(mix, tokenizer, helpers))
    expected = [_key(next(reference)) for _ in range(70)]
    stream = _packed_stream(mix, tokenizer, helpers)
    it = iter(stream)
    assert [_key(next(it)) for _ in range(45)] == expected[:45]
    state = json.loads(json.dumps(stream.state_dict()))  # plain JSON
    w = state["workers"][0]
    # both sources are past an epoch boundary, their buffers are full, the packing pool holds items
    assert {n: (v["epoch"], len(v["buffer"])) for n, v in w["sources"].items()} == {
        "captions": (1, 9),
        "more": (1, 9),
    }
    assert len(w["pending"]) == 2 and w["log"]["samples"] == 182
    calls = []
    resumed = _packed_stream(mix, tokenizer, helpers, calls)
    resumed.load_state_dict(state)
    it = iter(resumed)
    assert _key(next(it)) == expected[45]
    assert len(calls) <= 2 + 6  # the pool is rebuilt, the 182 samples read before are not processed again
    assert [_key(next(it)) for _ in range(24)] == expected[46:70]
    with pytest.raises(ValueError, match="other settings"):
        ShardStream(mix, rank=1, world_size=2).load_state_dict(state)


def test_exact_resume_with_dataloader_workers(tmp_path):
    mix = _mixture(tmp_path)

    def keys(n, state=None, take=None):
        stream = ShardStream(mix)
        if state:
            stream.load_state_dict(state)
        out = []
        for element in DataLoader(stream, batch_size=None, num_workers=2):
            stream.record(element)
            out.append((element["source"], element["key"]))
            if len(out) == n:
                break
        return out, stream.state_dict()

    expected, _ = keys(60)
    for stop in (21, 30):  # the next element comes from worker 1, then from worker 0
        head, state = keys(stop)
        assert head == expected[:stop] and state["next_worker"] == stop % 2
        tail, _ = keys(60 - stop, json.loads(json.dumps(state)))
        assert tail == expected[stop:]


def test_packed_rows_collate_into_training_rows(tmp_path, tokenizer, helpers):
    write_caption_shards(tmp_path / "caps", 1, 12)
    proc = PretrainProcessor(tokenizer, helpers.TinyProcessor(), helpers.vision_tokens)
    collate = DataCollator(tokenizer.pad_token_id)
    stream = ShardStream(
        {"shuffle": 0, "epochs": 1, "streams": {"c": str(tmp_path / "caps")}},
        processor=proc,
        batcher=PackedRows(150, rows_per_batch=2, collate_fn=collate, pool_size=8),
    )
    batches = list(stream)
    total = sum(int((b["segment_ids"] >= 0).sum()) for b in batches)
    assert total == sum(
        len(proc(s)["input_ids"])
        for s in ShardStream({"shuffle": 0, "epochs": 1, "streams": {"c": str(tmp_path / "caps")}})
    )
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    for b in batches:
        assert b["input_ids"].shape[0] <= 2 and set(b) >= {"position_ids", "segment_ids", "pixel_values"}
        assert (b["labels"][b["input_ids"] == image_id] == -100).all()
        n_img = [int((row == image_id).sum()) for row in b["input_ids"]]
        assert n_img == [len(p) for p in b["pixel_values"]]
        for r in range(b["input_ids"].shape[0]):  # vision + text tokens of a row fit its budget
            segs = b["segment_ids"][r]
            assert (
                int((segs >= 0).sum()) - n_img[r] + sum(helpers.vision_tokens(s) for s in b["image_sizes"][r])
                <= 150
                or segs.max() == 0
            )
    assert torch.is_tensor(batches[0]["input_ids"])
