"""Run under torchrun (see test_train_pretrain_distributed.py): one epoch of a shard stream on this rank, read
through a DataLoader with 2 workers, the keys written to OUT/rank-R.json."""

import json
import sys
from pathlib import Path

from torch.utils.data import DataLoader

from xgenmm_data import ShardStream
from xgenmm_train.distributed import init_distributed

rank, world, _ = (
    init_distributed()
)  # gloo on the CPU; the stream takes rank / world size from torch.distributed
stream = ShardStream(sys.argv[1])
keys = []
for sample in DataLoader(stream, batch_size=None, num_workers=2):
    stream.record(sample)
    keys.append(f"{sample['source']}/{sample['key']}")
Path(sys.argv[2], f"rank-{rank}.json").write_text(json.dumps({"world": world, "keys": keys}))
