"""The optimizer tests use tiny tensors: one intra-op thread is fastest (and stable on a busy box)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
