import pytest
import torch

from objectives.models import CNNConfig, ConvBlock, MLPConfig, build_model, count_parameters, model_config


@pytest.mark.parametrize(
    ("widths", "expected"),
    [
        ((512, 256), 535_818),  # seed 000 experiments 1-2
        ((1024, 512), 1_333_770),  # seed 000 experiment 3
        ((128,), 101_770),  # seed 002 experiments 1-2 (the report's distinct table rows)
        ((256, 128, 64), 242_762),  # seed 002 experiment 3
    ],
)
def test_documented_mlp_parameter_counts(widths, expected):
    assert count_parameters(build_model(MLPConfig(widths, dropout=0.2))) == expected


def test_mlp_has_dropout_after_each_hidden_layer_and_logits_out():
    model = build_model(MLPConfig((64, 32), dropout=0.3))
    dropouts = [m for m in model if isinstance(m, torch.nn.Dropout)]
    assert [d.p for d in dropouts] == [0.3, 0.3]
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_cnn_pooling_kernel_and_stride_shape_the_head():
    config = CNNConfig(
        blocks=(
            ConvBlock(8, 3, padding=1, pool="max", pool_kernel=2, pool_stride=2),  # 28 -> 14
            ConvBlock(4, 3, padding=0, pool="avg", pool_kernel=3, pool_stride=1),  # 12 -> 10
        ),
        dense_layers=(16,),
        num_classes=4,
    )
    model = build_model(config)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 4)
    head = [m for m in model if isinstance(m, torch.nn.Linear)][0]
    assert head.in_features == 4 * 10 * 10


def test_cnn_that_shrinks_image_to_nothing_is_rejected():
    blocks = tuple(ConvBlock(4, 5, pool="max", pool_kernel=2, pool_stride=2) for _ in range(4))
    with pytest.raises(ValueError, match="shrink"):
        build_model(CNNConfig(blocks))


def test_model_config_maps_plain_parameters_without_optuna():
    mlp = model_config("mlp", {"hidden_layers": (32,), "dropout": 0.1}, num_classes=10)
    assert mlp == MLPConfig((32,), 0.1, 10)
    cnn = model_config("cnn", {"conv_blocks": [{"channels": 4, "kernel_size": 3}]}, num_classes=10)
    assert cnn.blocks == (ConvBlock(4, 3),)


def test_dropout_keeps_one_minus_p_scales_survivors_and_routes_gradients_through_them():
    from objectives.models import Dropout
    torch.manual_seed(0)
    x = torch.ones(200, 500, requires_grad=True)
    layer = Dropout(0.3).train()
    y = layer(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.005)  # 100,000 draws
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(sum y)/dx = mask / (1 - p)
    torch.manual_seed(0)
    assert torch.equal(Dropout(0.3).train()(torch.ones(200, 500)), y.detach())  # seeded: the same draw
    assert torch.equal(layer.eval()(x), x)  # evaluation passes inputs through
    bf16 = Dropout(0.3).train()(torch.ones(64, 64, dtype=torch.bfloat16))
    assert bf16.dtype == torch.bfloat16


@pytest.mark.parametrize("kind, kernel, stride", [("max", 7, 1), ("max", 5, 1), ("avg", 7, 2), ("max", 2, 2)])
def test_large_pools_are_separable_and_pool_exactly_as_one_window(kind, kernel, stride):
    from objectives.models import _pool
    torch.manual_seed(0)
    pool = _pool(ConvBlock(channels=4, kernel_size=3, pool=kind, pool_kernel=kernel, pool_stride=stride))
    one_window = {"max": torch.nn.MaxPool2d, "avg": torch.nn.AvgPool2d}[kind](kernel, stride)
    assert isinstance(pool, torch.nn.Sequential) == (kernel >= 5)
    x = torch.randn(3, 4, 22, 22, requires_grad=True)
    expected = one_window(x)
    got = pool(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)
    grad = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, x, grad)
    (got_grad,) = torch.autograd.grad(got, x, grad)
    assert torch.allclose(got_grad, expected_grad, atol=1e-6)  # no ties in random inputs
