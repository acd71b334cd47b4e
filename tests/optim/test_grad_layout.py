"""A channels_last param may receive a contiguous grad (autocast casts do that on CUDA): the step must cope."""

import pytest
import torch

from classy_fast.optim import FusedAdamW, FusedSGD

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", [FusedSGD, FusedAdamW])
def test_grad_with_other_layout_than_param(device, cls):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3, 3, 3, device=device).contiguous(memory_format=torch.channels_last))
    q = torch.nn.Parameter(p.detach().clone())  # same values, same layout
    grad = torch.randn(4, 3, 3, 3, device=device)
    p.grad = grad.clone()  # contiguous: a different layout from the param
    q.grad = grad.clone().contiguous(memory_format=torch.channels_last)
    kwargs = {"lr": 0.1} if cls is FusedAdamW else {"lr": 0.1, "momentum": 0.9}
    for opt in (cls([p], **kwargs), cls([q], **kwargs)):
        opt.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=0)
    assert p.is_contiguous(memory_format=torch.channels_last)
