import pytest
import torch

from classy_fast.config import ConfigError, ModelConfig
from classy_fast.models import build_model
from classy_fast.registry import MODELS


def test_small_resnet_shapes():
    m = build_model(ModelConfig(width=8), num_classes=7, in_channels=1)
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 7)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models_take_grayscale(name):
    m = build_model(ModelConfig(name=name), num_classes=4, in_channels=1).eval()
    assert m(torch.randn(1, 1, 64, 64)).shape == (1, 4)


def test_grayscale_adaptation_matches_rgb_copy():
    torch.manual_seed(0)
    rgb = build_model(ModelConfig(name="resnet18"), num_classes=3, in_channels=3).eval()
    torch.manual_seed(0)
    gray = build_model(ModelConfig(name="resnet18"), num_classes=3, in_channels=3).eval()
    from classy_fast.models import adapt_input_channels

    adapt_input_channels(gray, 1)
    x = torch.randn(1, 1, 32, 32)
    # The adapted first conv sums the RGB filters' mean ×3: equal up to filter differences,
    # exactly equal when the original filters are the same across channels.
    with torch.no_grad():
        rgb.conv1.weight.copy_(rgb.conv1.weight.mean(1, keepdim=True).expand_as(rgb.conv1.weight))
        gray.conv1.weight.copy_(rgb.conv1.weight.sum(1, keepdim=True))
    assert torch.allclose(rgb(x.expand(1, 3, 32, 32)), gray(x), atol=1e-5)


def test_unknown_model_lists_choices():
    with pytest.raises(KeyError, match="unknown model 'resnet5000'.*small_resnet"):
        MODELS.get("resnet5000")


@pytest.mark.parametrize("name,side", [("googlenet", 64), ("inception_v3", 75)])
def test_models_with_auxiliary_classifiers_train_with_one_logits_tensor(name, side):
    model = build_model(ModelConfig(name=name), 10, 1).train()
    out = model(torch.randn(2, 1, side, side))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    with pytest.raises(ConfigError, match="aux_logits"):
        build_model(ModelConfig(name=name, kwargs={"aux_logits": True}), 10, 3)
