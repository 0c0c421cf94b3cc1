"""Architectures lesson: parameters, multiply-adds and receptive fields against independent references (torch,
torchvision's weight metadata, hand-computed convolution costs, published receptive fields)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision import models as tvm

from core.lessons import architectures as A
from core.zoo import BUNDLED, IMAGENET_MODELS, get_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

TORCHVISION = [n for n in A.architecture_names() if n != BUNDLED]


def test_names_cover_the_zoo_and_the_seed_table():
    names = A.architecture_names()
    assert names[0] == BUNDLED
    assert {get_spec(n).architecture for n in IMAGENET_MODELS} <= set(names)
    assert set(A.SEED_ARCHITECTURES) <= set(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", TORCHVISION)
def test_parameters_and_multiply_adds_match_torchvision_metadata(name):
    """torchvision's weight enums record num_params and '_ops' (GFLOPS that count a multiply-add once) for their
    released models: an independent reference for the meta-device counts (GoogLeNet only without aux heads)."""
    meta = tvm.get_model_weights(name).DEFAULT.meta
    m = A.measure(name)
    assert m.params == meta["num_params"]
    assert m.macs / 1e9 == pytest.approx(meta["_ops"], abs=6e-4)  # meta rounds to 3 decimals
    assert (m.top1, m.top5) == (meta["_metrics"]["ImageNet-1K"]["acc@1"], meta["_metrics"]["ImageNet-1K"]["acc@5"])


def test_bundled_counts_match_the_loaded_weights(bundled):
    m = A.measure(BUNDLED)
    assert m.params == sum(p.numel() for p in bundled.model.parameters())  # the real checkpoint, not the meta copy
    assert m.params < sum(t.numel() for t in bundled.model.state_dict().values())  # buffers are not parameters
    size = bundled.spec.preprocessing.size
    with FlopCounterMode(display=False) as counter:
        bundled.model(torch.zeros(1, bundled.spec.preprocessing.channels, size, size, device=bundled.device))
    assert m.macs == counter.get_total_flops() // 2
    assert m.top1 is None and m.size == size


class Tricky(nn.Module):
    """Where forward hooks on modules and FlopCounterMode disagree: a conv used twice, a functional convolution
    with no module, a grouped conv and a matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False)
        self.kernel = nn.Parameter(torch.randn(6, 8, 1, 1))
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.conv(x))  # same module twice
        x = self.grouped(x)
        x = F.conv2d(x, self.kernel, stride=2)  # functional: no module to hook
        return self.fc(x.mean((2, 3)))


def test_multiply_adds_count_every_call_by_hand():
    model, n = Tricky(), 10
    by_hand = (2 * (3 * 3 * 4) * 4 * n * n  # conv, twice: k²·c_in·c_out per output pixel
               + (3 * 3 * 2) * 8 * n * n  # grouped: k²·(c_in/groups)·c_out
               + 8 * 6 * 5 * 5  # 1x1, stride 2 -> 5x5
               + 6 * 3)  # linear
    assert A.multiply_adds(model, torch.randn(1, 4, n, n)) == by_hand
    hooked = []  # what per-module hooks see: one count per module call, nothing for F.conv2d
    for module in (model.conv, model.grouped):
        module.register_forward_hook(lambda m, i, o: hooked.append(o.numel() * m.weight[0].numel()))
    model(torch.randn(1, 4, n, n))
    assert sum(hooked) < by_hand - 8 * 6 * 5 * 5 + 1


def test_parameters_count_shared_tensors_once():
    model = nn.Sequential(nn.Linear(5, 5), nn.ReLU())
    model.append(model[0])  # the same layer twice
    assert A.count_parameters(model) == 30


@pytest.mark.parametrize(("name", "published"), [("alexnet", 195), ("vgg16", 212)])
def test_receptive_fields_match_araujo_et_al(name, published):
    """Araujo, Norris & Sim (Distill 2019), Table 1."""
    assert A.measure(name).receptive_field == published


def test_squeeze_excitation_network_gets_no_receptive_field_rather_than_a_wrong_one():
    m = A.measure("efficientnet_b0")
    assert m.receptive_field is None and "before the last 7×7 map" in m.rf_note


def test_size_changes_multiply_adds_not_parameters():
    small, native = A.measure("resnet18", 112), A.measure("resnet18")
    assert small.params == native.params
    assert small.macs < native.macs / 3


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="Unknown architecture"):
        A.build("not-a-net")


@pytest.mark.parametrize("comparison", [
    A.factorise_5x5(48, 17), A.factorise_asymmetric(32, 9), A.factorise_asymmetric(16, 12, k=5),
    A.bottleneck(192, 32, 16, 5, 28), A.depthwise_separable(24, 40, 3, 15),
], ids=lambda c: c.title)
def test_cost_formulas_match_torch_layers(comparison):
    size = int(comparison.before.macs_formula.rsplit("·", 1)[1])
    assert A.torch_cost(comparison.build_before, comparison.in_channels, size) == (comparison.before.params,
                                                                                   comparison.before.macs)
    assert A.torch_cost(comparison.build_after, comparison.in_channels, size) == (comparison.after.params,
                                                                                  comparison.after.macs)


def test_inception_savings():
    assert A.factorise_5x5(64, 28).saving == pytest.approx(1 - 18 / 25)  # 28 % fewer
    assert A.factorise_asymmetric(64, 28).saving == pytest.approx(1 / 3)  # 33 % fewer
    sep = A.depthwise_separable(256, 256, 3, 14)
    assert 1 - sep.saving == pytest.approx(1 / 256 + 1 / 9)  # MobileNet's ratio 1/N + 1/k²


def test_images_per_second_is_a_positive_rate():
    rate = A.images_per_second("alexnet", 64, batch=2, repeats=1)
    assert rate > 0 and math.isfinite(rate)
