import torch
from torch.utils.data import DataLoader

from xgenmm_data import SupervisedDataset, load_mixture
from xgenmm_data.shards import ShardDataset, parse_size, write_shards


def _same(a, b):
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert a["image_sizes"] == b["image_sizes"] and a["num_tokens"] == b["num_tokens"]
    assert len(a["pixel_values"]) == len(b["pixel_values"])
    for x, y in zip(a["pixel_values"], b["pixel_values"]):
        assert torch.equal(x, y)


def test_parse_size():
    assert parse_size("1GB") == 10**9 and parse_size("500MB") == 5 * 10**8 and parse_size("1KiB") == 1024


def test_shard_round_trip_equals_json_path(good_data, tokenizer, helpers, tmp_path):
    refs = load_mixture(good_data["path"], image_root=good_data["image_root"]) * 3
    info = write_shards(refs, tmp_path / "shards", max_size="1KB", max_count=5)
    assert info["written"] == 12 and info["skipped"] == 0 and len(info["shards"]) >= 3
    args = (tokenizer, helpers.TinyProcessor(), helpers.vision_tokens)
    ds = SupervisedDataset(refs, *args)
    streamed = list(ShardDataset(tmp_path / "shards", *args))
    assert len(streamed) == len(ds) == 12
    for i, item in enumerate(streamed):
        _same(item, ds[i])
    # split over 2 ranks x 2 workers: every sample exactly once
    seen = []
    for rank in range(2):
        sd = ShardDataset(tmp_path / "shards", *args, rank=rank, world_size=2, shuffle=4)
        for batch in DataLoader(sd, batch_size=None, num_workers=2):
            seen.append(tuple(batch["input_ids"].tolist()))
    assert sorted(seen) == sorted(tuple(ds[i]["input_ids"].tolist()) for i in range(12))
    # resampled streams never end
    it = iter(ShardDataset(tmp_path / "shards", *args, resampled=True))
    assert len([next(it) for _ in range(30)]) == 30


def test_shard_writer_skips_bad_records(good_data, tmp_path):
    refs = load_mixture(good_data["path"], image_root=good_data["image_root"])
    refs[0].images = ["/nonexistent.jpg"]
    info = write_shards(refs, tmp_path / "s")
    assert info["written"] == 3 and info["skipped"] == 1
    assert "missing image file /nonexistent.jpg" in info["skipped_by_reason"]
