import math
from pathlib import Path

import pytest
import torch

import objectives.training as training
from objectives.data import TensorSplit, load_search_data
from objectives.models import MLPConfig, build_model
from objectives.training import (
    NonFiniteLossError,
    TrainSettings,
    cpu_has_native_bf16,
    evaluate,
    resolve_precision,
    seed_everything,
    train,
)


@pytest.fixture(scope="module")
def data(synthetic_root):
    return load_search_data("kmnist", synthetic_root, 1 / 6, seed=0, device=torch.device("cpu"))


def test_split_is_stratified_normalised_and_on_device(data):
    assert len(data.train) == 500 and len(data.val) == 100
    assert torch.bincount(data.val.labels).tolist() == [10] * 10
    assert abs(float(data.train.images.mean())) < 1e-3
    assert abs(float(data.train.images.std()) - 1) < 1e-2
    assert data.train.images.shape[1:] == (1, 28, 28) and data.train.images.dtype == torch.float32


def test_split_is_fixed_by_seed(synthetic_root, data):
    cpu = torch.device("cpu")
    again = load_search_data("kmnist", synthetic_root, 1 / 6, seed=0, device=cpu)
    other = load_search_data("kmnist", synthetic_root, 1 / 6, seed=1, device=cpu)
    assert again.split_hash == data.split_hash != other.split_hash


def test_loop_reduces_loss_and_learns(data):
    seed_everything(0)
    model = build_model(MLPConfig((64,), dropout=0.1))
    before = evaluate(model, data.val)
    history = train(model, data.train, data.val, TrainSettings(epochs=4, batch_size=32, learning_rate=1e-3))
    assert [r.epoch for r in history] == [1, 2, 3, 4]
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_loss < before.loss
    assert history[-1].val_accuracy > 0.9


def test_same_seed_same_result(data):
    results = []
    for _ in range(2):
        seed_everything(3)
        model = build_model(MLPConfig((32,), dropout=0.2))
        settings = TrainSettings(epochs=2, batch_size=50, learning_rate=1e-3, seed=3)
        results.append(train(model, data.train, data.val, settings)[-1].val_loss)
    assert results[0] == results[1]


def test_nan_loss_raises_non_finite(data):
    images = data.train.images.clone()
    images[0] = math.nan
    broken = TensorSplit(images, data.train.labels)
    model = build_model(MLPConfig((16,)))
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        train(model, broken, data.val, TrainSettings(epochs=3, batch_size=32, learning_rate=1e-3))


def test_early_stopping_stops_when_validation_loss_stops_falling(data):
    seen = []
    model = build_model(MLPConfig((16,)))
    # a learning rate this small barely moves the loss, while a huge one makes it rise:
    # either way patience 1 must cut a 30-epoch run short
    settings = TrainSettings(epochs=30, batch_size=500, learning_rate=5.0, early_stopping_patience=1)
    try:
        history = train(model, data.train, data.val, settings, seen.append)
    except NonFiniteLossError:
        pytest.skip("diverged to NaN before early stopping could act")
    assert len(history) < 30 and len(seen) == len(history)


def linear_output_dtypes(model):
    """The dtypes the model's linear layers compute in, recorded by forward hooks."""
    seen = set()
    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.register_forward_hook(lambda _module, _inputs, output: seen.add(output.dtype))
    return seen


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_sets_the_arithmetic_of_training_and_validation(data, precision, dtype):
    seed_everything(0)
    model = build_model(MLPConfig((64,), dropout=0.1))
    seen = linear_output_dtypes(model)
    settings = TrainSettings(epochs=3, batch_size=32, learning_rate=1e-3, precision=precision)
    history = train(model, data.train, data.val, settings)
    assert seen == {dtype}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32
    assert history[-1].val_accuracy > 0.9  # bf16 learns the synthetic classes as fp32 does
    assert evaluate(model, data.val, precision).accuracy == history[-1].val_accuracy


def test_evaluate_defaults_to_float32(data):
    model = build_model(MLPConfig((16,)))
    seen = linear_output_dtypes(model)
    evaluate(model, data.val)
    assert seen == {torch.float32}


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        TrainSettings(epochs=1, batch_size=8, learning_rate=1e-3, precision="fp16")


@pytest.mark.parametrize(("requested", "device", "native", "expected"), [
    ("fp32", "cuda", True, "fp32"),
    ("bf16", "cpu", False, "bf16"),  # asked for: even where bf16 is emulated
    ("auto", "cuda", False, "bf16"),
    ("auto", "cpu", True, "bf16"),
    ("auto", "cpu", False, "fp32"),  # emulated bf16 is slower than float32
    ("auto", "mps", True, "fp32"),
])
def test_auto_precision_follows_the_device_and_the_cpu(monkeypatch, requested, device, native, expected):
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision(requested, torch.device(device)) == expected


def test_native_bf16_probe_agrees_with_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = cpuinfo.read_text().split()
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_shuffle_buffers_give_the_split_in_the_order_asked_and_are_reused():
    images, labels = torch.randn(50, 1, 28, 28), torch.arange(50)
    buffers = training.ShuffleBuffers(TensorSplit(images, labels))
    order = torch.randperm(50)
    shuffled_images, shuffled_labels = buffers.shuffled(order)
    assert torch.equal(shuffled_images, images[order]) and torch.equal(shuffled_labels, labels[order])
    again, _ = buffers.shuffled(torch.randperm(50))
    assert again.data_ptr() == shuffled_images.data_ptr()  # no new allocation per epoch
