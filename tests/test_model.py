import numpy as np
import pytest
import torch

from napari_unet.errors import UNetError
from napari_unet.models.model import (
    UNet,
    halo,
    input_size_for_output,
    is_valid_input,
    output_size,
    valid_input_size,
)


def test_paper_geometry_572_to_388():
    assert output_size(572, 4) == 388
    assert halo(4) == 92
    net = UNet(depth=4, base_channels=64)
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 4, 5])
def test_valid_sizes_are_exactly_those_that_run(depth):
    net = UNet(depth=depth, base_channels=2, dropout=0).eval()
    start = valid_input_size(1, depth)
    for n in range(start, start + 2 ** (depth + 1) + 3):
        expected = output_size(n, depth)
        if expected is None:
            continue
        with torch.no_grad():
            out = net(torch.zeros(1, 1, n, n + 2**depth))
        assert out.shape[-2] == expected
        assert n - expected == 2 * halo(depth)


def test_invalid_sizes_and_nearest_valid():
    assert not is_valid_input(573, 4)
    n = valid_input_size(573, 4)
    assert n >= 573 and is_valid_input(n, 4)
    assert all(not is_valid_input(k, 4) for k in range(573, n))
    assert output_size(input_size_for_output(100, 3), 3) >= 100


def test_he_initialization_std():
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=32)
    conv = net.down[1][0]
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    assert torch.all(conv.bias == 0)


def test_dropout_sits_at_the_end_of_the_contracting_path():
    net = UNet(depth=3, base_channels=4, dropout=0.5)
    assert isinstance(net.dropout, torch.nn.Dropout) and net.dropout.p == 0.5
    net.eval()
    x = torch.randn(1, 1, 140, 140)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # no dropout at inference


def test_batch_norm_folding_keeps_outputs():
    torch.manual_seed(1)
    net = UNet(depth=2, base_channels=4, batch_norm=True, dropout=0)
    net.train()
    with torch.no_grad():
        for _ in range(3):  # give batch norm non-trivial running statistics
            net(torch.randn(2, 1, 64, 64) * 3 + 1)
    net.eval()
    x = torch.randn(1, 1, 68, 68)
    with torch.no_grad():
        assert torch.allclose(net(x), net.fused_for_inference()(x), atol=1e-5)


def test_bad_architecture_is_a_user_error():
    with pytest.raises(UNetError):
        UNet(depth=2, n_classes=1)


def test_flop_count_matches_hooks():
    net = UNet(depth=2, base_channels=4, dropout=0).eval()
    counted = []

    def hook(module, inputs, output):
        # A stride-2, 2x2 transposed convolution gives each output pixel one tap per input channel.
        k = 1 if isinstance(module, torch.nn.ConvTranspose2d) else np.prod(module.kernel_size)
        cin = module.in_channels
        counted.append(2 * k * cin * output.shape[1] * output.shape[-2] * output.shape[-1])

    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.zeros(1, 1, 92, 92))
    assert net.conv_flops(92, 92) == pytest.approx(sum(counted), rel=1e-9)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_a_colour_network_folded_for_grey_input_gives_the_same_output(batch_norm):
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4, in_channels=3, batch_norm=batch_norm).eval()
    grey = torch.randn(1, 1, 44, 52)
    folded = net.for_grey_input().eval()
    assert folded.config.in_channels == 1 and net.config.in_channels == 3
    with torch.no_grad():
        torch.testing.assert_close(folded(grey), net(grey.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)


def test_forward_shows_its_contracting_path_and_gives_the_same_scores():
    net = UNet(depth=2, base_channels=4, n_classes=3, batch_norm=True, dropout=0).eval()
    x = torch.randn(2, 1, 92, 92)
    seen = []
    with torch.no_grad():
        plain, shown = net(x), net(x, seen.extend)
        levels = net.encode(x)
    torch.testing.assert_close(plain, shown)
    assert [t.shape[1] for t in seen] == [4, 8, 16]
    for a, b in zip(seen, levels):
        torch.testing.assert_close(a, b)
