import random
from collections import Counter

import numpy as np
import pytest
import torch

from xgenmm_data import LengthGroupedSampler, PackedBatchSampler, pack_best_fit_decreasing, padding_efficiency


def _lengths(n=203, seed=0):
    rng = random.Random(seed)
    return [rng.randint(400, 1500) * (1 if rng.random() > 0.1 else -1) for _ in range(n)]


def _all_ranks(make, world):
    samplers = [make(world, r) for r in range(world)]
    return samplers, [list(s) for s in samplers]


@pytest.mark.parametrize("world", [1, 2, 4, 8])
@pytest.mark.parametrize("drop_last", [False, True])
def test_length_grouped_exact_across_ranks(world, drop_last):
    lengths = _lengths()
    samplers, per_rank = _all_ranks(
        lambda w, r: LengthGroupedSampler(lengths, batch_size=3, world_size=w, rank=r, drop_last=drop_last),
        world,
    )
    assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank
    for step in zip(*per_rank):
        assert len({len(b) for b in step}) == 1  # same batch size on every rank at each step
    seen = Counter(i for batches in per_rank for b in batches for i in b)
    s = samplers[0]
    if drop_last:
        assert all(v == 1 for v in seen.values())
        assert len(seen) + s.num_dropped == len(lengths)
    else:
        assert set(seen) == set(range(len(lengths)))
        assert sum(seen.values()) == len(lengths) + s.num_padded and s.num_padded < world
    # full batches except possibly the last
    assert all(len(b) == 3 for b in per_rank[0][:-1])


def test_modality_grouping_and_length_sorting():
    lengths = _lengths(400)
    s = LengthGroupedSampler(lengths, batch_size=4, world_size=2, rank=0, drop_last=True)
    plan = s.plan()
    for step in plan[:-1]:
        mods = {lengths[i] > 0 for b in step for i in b}
        assert len(mods) == 1  # one modality per step
    eff = padding_efficiency([b for step in plan for b in step], lengths)
    rnd = LengthGroupedSampler(lengths, batch_size=4, megabatch_steps=1, group_by_modality=False)
    assert eff > 0.9 and eff > padding_efficiency(list(rnd), lengths) - 0.05


def test_deterministic_per_seed_epoch_and_resume_without_global_rng():
    lengths = _lengths()
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    states = (torch.get_rng_state().clone(), random.getstate(), np.random.get_state()[1].copy())
    a = LengthGroupedSampler(lengths, batch_size=3, world_size=2, rank=1, seed=5)
    e0 = list(a)
    assert e0 == list(LengthGroupedSampler(lengths, batch_size=3, world_size=2, rank=1, seed=5))
    a.set_epoch(1)
    e1 = list(a)
    assert e1 != e0 and sorted(map(tuple, e1)) != sorted(map(tuple, e0))
    p = PackedBatchSampler(lengths, max_tokens_per_row=4096, rows_per_batch=2, world_size=2, rank=0)
    list(p)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    assert (np.random.get_state()[1] == states[2]).all()
    # resume at batch 5 of epoch 1 without reading the skipped ones
    b = LengthGroupedSampler(lengths, batch_size=3, world_size=2, rank=1, seed=5)
    b.load_state_dict({"epoch": 1, "batch": 5, "seed": 5, "world_size": 2})
    assert list(b) == e1[5:]
    assert list(b) == e1  # the next pass of the same epoch starts from 0 again
    it = iter(a)
    [next(it) for _ in range(3)]
    assert a.state_dict() == {"epoch": 1, "batch": 3, "seed": 5, "world_size": 2}
    with pytest.raises(ValueError, match="another seed"):
        b.load_state_dict({"epoch": 0, "batch": 0, "seed": 6, "world_size": 2})


def test_token_budget_batches():
    lengths = _lengths(300)
    s = LengthGroupedSampler(lengths, max_tokens_per_batch=4000, world_size=2, rank=0, drop_last=True)
    for b in s.plan()[:-1]:
        for batch in b:
            assert len(batch) * max(abs(lengths[i]) for i in batch) <= 4000 or len(batch) == 1
    with pytest.raises(ValueError):
        LengthGroupedSampler(lengths)


def test_best_fit_packing_never_splits_or_overflows():
    lengths = [abs(n) for n in _lengths(500)] + [5000]
    rows = pack_best_fit_decreasing(range(len(lengths)), lengths, 4096)
    flat = [i for r in rows for i in r]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 4096 for r in rows if len(r) > 1)
    assert [len(r) for r in rows if 500 in r] == [1]  # the oversize sample is alone
    eff = sum(lengths[:-1]) / (4096 * (len(rows) - 1))
    assert eff > 0.97


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_packed_sampler_exact_across_ranks(world):
    lengths = _lengths(301)
    _, per_rank = _all_ranks(
        lambda w, r: PackedBatchSampler(
            lengths, max_tokens_per_row=3000, rows_per_batch=2, world_size=w, rank=r
        ),
        world,
    )
    assert len({len(b) for b in per_rank}) == 1
    rows = [row for batches in per_rank for batch in batches for row in batch]
    seen = Counter(i for row in rows for i in row)
    assert set(seen) == set(range(301))
    assert all(sum(abs(lengths[i]) for i in row) <= 3000 for row in rows)
    drop = [
        PackedBatchSampler(lengths, 3000, 2, world_size=world, rank=r, drop_last=True) for r in range(world)
    ]
    seen = Counter(i for s in drop for batch in s for row in batch for i in row)
    assert max(seen.values()) == 1 and len(seen) + 0 <= 301
