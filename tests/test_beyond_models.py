"""The beyond spaces' model and training options on tiny synthetic data."""

from dataclasses import fields

import optuna
import pytest
import torch
from torch import nn

from objectives.augment import Augmentation, random_affine
from objectives.data import TensorSplit, load_search_data
from objectives.models import (
    CNNConfig,
    ConvBlock,
    InvalidModelError,
    MLPConfig,
    build_model,
    count_parameters,
    forward_mflops,
    model_config,
)
from objectives.training import (
    Checkpoint,
    TrainSettings,
    evaluate,
    file_sha256,
    make_optimizer,
    make_scheduler,
    seed_everything,
    train,
    train_settings,
)
from spaces.base import REPORTS_DEFAULTS

CPU = torch.device("cpu")
DEVICES = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def data(synthetic_root):
    return load_search_data("kmnist", synthetic_root, 1 / 6, seed=0, device=CPU)


@pytest.mark.parametrize(("name", "module"), [("relu", nn.ReLU), ("gelu", nn.GELU), ("silu", nn.SiLU)])
def test_activation_choice_is_used_in_every_hidden_layer(name, module):
    mlp = build_model(MLPConfig((32, 16), activation=name))
    cnn = build_model(CNNConfig((ConvBlock(4, 3, padding=1), ConvBlock(8, 3, padding=1)),
                                dense_layers=(16,), activation=name))
    assert sum(isinstance(m, module) for m in mlp) == 2
    assert sum(isinstance(m, module) for m in cnn) == 3
    assert mlp(torch.zeros(3, 1, 28, 28)).shape == cnn(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_unknown_activation_is_an_invalid_model():
    with pytest.raises(InvalidModelError, match="activation"):
        build_model(MLPConfig((8,), activation="tanh"))


def test_mlp_batch_norm_parameter_count_and_shape():
    # 784x32 weights (no bias: batch norm's shift replaces it) + 2x32 norm + 32x10 + 10
    model = build_model(MLPConfig((32,), batch_norm=True))
    assert count_parameters(model) == 784 * 32 + 2 * 32 + 32 * 10 + 10
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model) == 1
    model.train()
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)


def test_cnn_two_convs_per_block_batch_norm_global_pool_parameter_count():
    config = CNNConfig((ConvBlock(8, 3, padding=1), ConvBlock(16, 5, padding=2)), convs_per_block=2,
                       batch_norm=True, global_pool=True)
    model = build_model(config)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 8, (3, 3)), (8, 8, (3, 3)), (8, 16, (5, 5)), (16, 16, (5, 5))]
    expected = (1 * 8 * 9 + 8 * 8 * 9 + 8 * 16 * 25 + 16 * 16 * 25  # conv weights, no biases
                + 2 * (8 + 8 + 16 + 16)  # batch norm scale and shift
                + 16 * 10 + 10)  # global average pool -> 16 features -> 10 logits
    assert count_parameters(model) == expected
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(("placement", "dropouts"), [("head", 2), ("blocks", 2), ("both", 4)])
def test_cnn_dropout_placement(placement, dropouts):
    config = CNNConfig((ConvBlock(4, 3, padding=1), ConvBlock(4, 3, padding=1)), dense_layers=(8,),
                       dropout=0.25, dropout_placement=placement)
    model = build_model(config)
    found = [i for i, m in enumerate(model) if isinstance(m, nn.Dropout)]
    assert len(found) == dropouts
    flatten = next(i for i, m in enumerate(model) if isinstance(m, nn.Flatten))
    after_flatten = sum(i > flatten for i in found)
    assert after_flatten == {"head": 2, "blocks": 0, "both": 2}[placement]


def test_cnn_pool_choices_that_shrink_the_image_away_are_invalid():
    blocks = tuple(ConvBlock(4, 3, padding=1, pool="avg", pool_kernel=7, pool_stride=2) for _ in range(3))
    with pytest.raises(InvalidModelError, match="nothing"):
        build_model(CNNConfig(blocks))


def test_forward_flops_are_counted_by_torch():
    assert forward_mflops(build_model(MLPConfig((), num_classes=10))) == pytest.approx(2 * 784 * 10 / 1e6)
    cnn = build_model(CNNConfig((ConvBlock(4, 3, padding=1, pool="none"),), num_classes=10))
    conv = 2 * 28 * 28 * 4 * 9
    head = 2 * 4 * 28 * 28 * 10
    assert forward_mflops(cnn) == pytest.approx((conv + head) / 1e6)
    assert cnn.training  # counting leaves the model as it found it


def test_model_defaults_are_the_reports_choices():
    """spaces/ fills documented configs with REPORTS_DEFAULTS; objectives/ must mean the same."""
    mlp = {f.name: f.default for f in fields(MLPConfig)}
    cnn = {f.name: f.default for f in fields(CNNConfig)}
    settings = train_settings({"batch_size": 32, "learning_rate": 1e-3}, epochs=1, seed=0)
    assert settings == train_settings({"batch_size": 32, "learning_rate": 1e-3, **REPORTS_DEFAULTS},
                                      epochs=1, seed=0)
    assert (settings.optimizer, settings.lr_schedule, settings.label_smoothing) == ("adam", "constant", 0.0)
    assert not settings.augmentation.enabled
    for name in ("activation", "batch_norm"):
        assert mlp[name] == cnn[name] == REPORTS_DEFAULTS[name]
    assert cnn["convs_per_block"] == REPORTS_DEFAULTS["convs_per_block"]
    assert cnn["global_pool"] == REPORTS_DEFAULTS["global_pool"]
    params = {"hidden_layers": (8,), "conv_blocks": [{"channels": 4, "kernel_size": 3}]}
    assert model_config("mlp", params, 10) == model_config("mlp", {**params, **REPORTS_DEFAULTS}, 10)
    assert model_config("cnn", params, 10) == model_config("cnn", {**params, **REPORTS_DEFAULTS}, 10)


# augmentation


def one_pixel_images(n: int, device: torch.device, background: float = -0.4) -> torch.Tensor:
    images = torch.full((n, 1, 28, 28), background, device=device)
    images[:, 0, 14, 14] = 3.0
    return images


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_affine_runs_on_the_batch_device_and_keeps_shape_and_background(device):
    images = one_pixel_images(64, device)
    generator = torch.Generator(device=device).manual_seed(0)
    background = images.amin()
    moved = random_affine(images, Augmentation(max_shift=2, max_rotation=15), background, generator)
    assert moved.device == images.device and moved.shape == images.shape and moved.dtype == images.dtype
    # pixels brought in from outside the image are normalised black, not 0
    assert torch.allclose(moved[:, :, 0, :], background) and torch.allclose(moved[:, :, :, -1], background)
    # every image moved its bright pixel somewhere, by at most 2 px plus the rotation about the centre
    weights = (moved - background).clamp(min=0)[:, 0]
    ys, xs = torch.meshgrid(torch.arange(28.0, device=device), torch.arange(28.0, device=device),
                            indexing="ij")
    mass = weights.sum(dim=(1, 2))
    cy, cx = (weights * ys).sum(dim=(1, 2)) / mass, (weights * xs).sum(dim=(1, 2)) / mass
    distance = torch.sqrt((cy - 14) ** 2 + (cx - 14) ** 2)
    assert float(distance.max()) <= 2 * 2**0.5 + 1.0
    assert float(distance.std()) > 0.1  # each image drew its own transform


def test_affine_without_shift_or_rotation_is_the_identity_and_seeded():
    images = torch.randn(8, 1, 28, 28)
    generator = torch.Generator().manual_seed(0)
    same = random_affine(images, Augmentation(), images.amin(), generator)
    assert torch.allclose(same, images, atol=1e-5)
    runs = [random_affine(images, Augmentation(2, 10), images.amin(), torch.Generator().manual_seed(5))
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_training_with_augmentation_keeps_labels(data):
    """Shifted and rotated images keep their class: the model still learns the classes, and
    the split's labels are left untouched."""
    labels_before = data.train.labels.clone()
    seed_everything(0)
    model = build_model(MLPConfig((64,)))
    settings = TrainSettings(epochs=4, batch_size=32, learning_rate=1e-3,
                             augmentation=Augmentation(max_shift=1, max_rotation=8))
    history = train(model, data.train, data.val, settings)
    assert torch.equal(data.train.labels, labels_before)
    assert history[-1].val_accuracy > 0.8


# optimisers, schedules, label smoothing


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_every_optimiser_and_schedule_trains(data, optimizer, schedule):
    seed_everything(0)
    model = build_model(MLPConfig((32,), batch_norm=True, activation="gelu"))
    rate = 0.05 if optimizer == "sgd" else 2e-3
    settings = TrainSettings(epochs=3, batch_size=50, learning_rate=rate, optimizer=optimizer,
                             lr_schedule=schedule, label_smoothing=0.1)
    history = train(model, data.train, data.val, settings)
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_accuracy > 0.7


def test_optimisers_are_the_named_torch_classes():
    model = nn.Linear(4, 2)
    kinds = {name: type(make_optimizer(model, TrainSettings(1, 8, 0.1, weight_decay=0.01, optimizer=name),
                                       CPU)) for name in ("adam", "adamw", "sgd")}
    assert kinds == {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    sgd = make_optimizer(model, TrainSettings(1, 8, 0.1, optimizer="sgd"), CPU)
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["nesterov"]


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_schedules_span_the_whole_run_and_anneal(schedule):
    model = nn.Linear(4, 2)
    settings = TrainSettings(epochs=5, batch_size=8, learning_rate=0.1, optimizer="sgd", lr_schedule=schedule)
    optimizer = make_optimizer(model, settings, CPU)
    scheduler = make_scheduler(optimizer, settings, steps_per_epoch=10)
    rates = []
    for _ in range(50):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(rates) == pytest.approx(0.1, rel=0.01)
    assert rates[-1] < 0.01  # annealed by the last step
    peak = rates.index(max(rates))
    assert peak == 0 if schedule == "cosine" else 10 <= peak <= 20  # one-cycle warms up first


def test_label_smoothing_changes_the_training_loss_not_the_validation_loss(data):
    losses = {}
    for smoothing in (0.0, 0.2):
        seed_everything(1)
        model = build_model(MLPConfig((32,)))
        settings = TrainSettings(epochs=1, batch_size=600, learning_rate=1e-12, label_smoothing=smoothing)
        losses[smoothing] = train(model, data.train, data.val, settings)[0]
    # with a learning rate of ~0 the model is its initialisation in both runs
    assert losses[0.0].val_loss == pytest.approx(losses[0.2].val_loss)
    assert losses[0.0].train_loss != pytest.approx(losses[0.2].train_loss)


def test_resume_from_checkpoint_continues_schedule_and_augmentation_exactly(data, tmp_path):
    settings = TrainSettings(epochs=4, batch_size=50, learning_rate=3e-3, optimizer="adamw",
                             lr_schedule="onecycle", augmentation=Augmentation(2, 10), seed=7)

    def run(checkpoint, stop_after=None):
        seed_everything(7)
        model = build_model(MLPConfig((32,), dropout=0.1, batch_norm=True))

        def maybe_stop(result):
            if stop_after is not None and not result.restored and result.epoch == stop_after:
                raise KeyboardInterrupt

        try:
            return train(model, data.train, data.val, settings, maybe_stop, checkpoint)
        except KeyboardInterrupt:
            return None

    digests = []
    straight = run(None)
    assert run(Checkpoint(tmp_path / "c.safetensors", on_saved=digests.append), stop_after=2) is None
    assert len(digests) == 2 and digests[-1] == file_sha256(tmp_path / "c.safetensors")
    resumed = run(Checkpoint(tmp_path / "c.safetensors", digests[-1]))
    assert [r.restored for r in resumed] == [True, True, False, False]
    assert [r.val_loss for r in resumed] == [r.val_loss for r in straight]  # bit for bit


def test_train_settings_map_trial_parameters():
    params = {"batch_size": 64, "learning_rate": 0.05, "weight_decay": 1e-4, "optimizer": "sgd",
              "lr_schedule": "cosine", "label_smoothing": 0.1, "max_shift": 2, "max_rotation": 12.5}
    settings = train_settings(params, epochs=9, seed=4, early_stopping_patience=3)
    assert settings == TrainSettings(9, 64, 0.05, 1e-4, 4, 3, "sgd", "cosine", 0.1, Augmentation(2, 12.5))
    with pytest.raises(ValueError, match="optimizer"):
        train_settings({**params, "optimizer": "lion"}, epochs=1, seed=0)


def test_evaluation_uses_running_batch_norm_statistics(data):
    seed_everything(0)
    model = build_model(MLPConfig((32,), batch_norm=True))
    train(model, data.train, None, TrainSettings(epochs=2, batch_size=50, learning_rate=1e-3))
    single = TensorSplit(data.val.images[:1], data.val.labels[:1])
    # one image cannot form batch statistics: eval mode must use the running ones
    assert evaluate(model, single).predictions.shape == (1,)


def test_optuna_sees_an_invalid_model_as_pruned_with_reason(data):
    from objectives.objective import Objective
    from spaces.base import ConvStackParam, FloatParam, SearchSpace

    space = SearchSpace("tiny_cnn", "cnn", "test", params=(
        ConvStackParam("conv_blocks", 3, 3, (4,), (3,), ("avg7s2",)),
        FloatParam("learning_rate", 1e-3, 1e-3)), fixed={"batch_size": 50})
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(space, data, epochs=1, seed=0), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert "nothing" in trial.user_attrs["pruned_reason"] and not trial.intermediate_values


def test_models_over_the_space_flop_cap_are_pruned_before_training(data):
    from objectives.objective import Objective
    from spaces.base import FloatParam, SearchSpace, WidthsParam

    space = SearchSpace("tiny_mlp", "mlp", "test", params=(
        WidthsParam("hidden_layers", ((512,),)), FloatParam("learning_rate", 1e-3, 1e-3)),
        fixed={"batch_size": 50}, max_forward_mflops=0.5)
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(space, data, epochs=1, seed=0), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["forward_mflops"] == pytest.approx(2 * (784 * 512 + 512 * 10) / 1e6, rel=1e-3)
    assert "cap of 0" in trial.user_attrs["pruned_reason"] and not trial.intermediate_values
