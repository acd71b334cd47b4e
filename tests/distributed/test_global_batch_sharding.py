"""Per-rank shares of in-memory data: W ranks × B read what 1 process × W·B reads; eval sees each sample once."""

import pytest
import torch

from classy_fast.data.global_batch_sharding import eval_shard_range, train_batches_per_epoch
from classy_fast.data.memory import InMemoryImageData


def make_data(n, batch_size, train=True, drop_last=True, augment=False, rank=0, world=1):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    data = InMemoryImageData(images, torch.arange(n) % 7, num_classes=7, batch_size=batch_size, train=train,
                             mean=(0.0,), std=(1.0,), device="cpu", seed=11, augment=augment, drop_last=drop_last)
    data.set_shard(rank, world)
    return data


def sample_ids(batch):
    images, _ = batch
    return (images[:, 0, 0, 0] * 255).round().long()  # each image is filled with its index


@pytest.mark.parametrize("n, batch, world", [(96, 8, 2), (100, 5, 4), (37, 4, 3), (64, 16, 1)])
def test_w_ranks_read_the_global_batches_of_one_process(n, batch, world):
    single = make_data(n, batch * world)
    ranks = [make_data(n, batch, rank=r, world=world) for r in range(world)]
    assert all(len(d) == len(single) == n // (batch * world) for d in ranks)
    for global_batch, *shares in zip(single, *ranks):
        assert torch.equal(sample_ids(global_batch), torch.cat([sample_ids(s) for s in shares]))


def test_no_drop_last_pads_the_last_global_batch_evenly():
    n, batch, world = 37, 4, 3  # 3 full global batches of 12, then 1 sample padded to 3 (one per rank)
    ranks = [list(make_data(n, batch, drop_last=False, rank=r, world=world)) for r in range(world)]
    assert train_batches_per_epoch(n, batch, world, False) == 4 and all(len(b) == 4 for b in ranks)
    assert [len(b[-1][1]) for b in ranks] == [1, 1, 1]
    seen = torch.cat([sample_ids(b) for batches in ranks for b in batches])
    assert set(seen.tolist()) == set(range(n)) and len(seen) == 39  # every sample, plus 2 repeats of the pad


def test_permutation_changes_per_epoch_and_never_depends_on_rank():
    a, b = make_data(48, 8, rank=0, world=2), make_data(48, 8, rank=1, world=2)
    first = torch.cat([sample_ids(x) for x in a] + [sample_ids(x) for x in b])
    assert sorted(first.tolist()) == list(range(48))  # disjoint shares covering the epoch
    a.set_epoch(1)
    assert not torch.equal(torch.cat([sample_ids(x) for x in a]), first[:24])


@pytest.mark.parametrize("n, world", [(41, 2), (41, 4), (3, 4), (250, 7)])
def test_eval_counts_each_sample_once(n, world):
    seen = []
    for r in range(world):
        data = make_data(n, 8, train=False, rank=r, world=world)
        batches = list(data)
        assert len(batches) == len(data)
        seen += [i for b in batches for i in sample_ids(b).tolist()]
    assert sorted(seen) == list(range(n))
    sizes = [eval_shard_range(n, world, r)[1] - eval_shard_range(n, world, r)[0] for r in range(world)]
    assert max(sizes) - min(sizes) <= 1


def test_rank_0_keeps_the_single_process_augmentation_stream():
    single = make_data(32, 8, augment=True)
    rank0 = make_data(32, 8, augment=True, rank=0, world=2)
    order = single._order()
    assert torch.equal(single.batch(order, 0)[0], rank0.batch(order, 0)[0])  # same samples, same crops and flips
