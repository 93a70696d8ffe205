"""MLPs beyond the reports: depth, widths, activation, batch norm, optimiser, schedule, augmentation.

Every documented MLP lies inside (with `REPORTS_DEFAULTS` for the knobs the reports never
turned), so replaying them first warms the sampler. Per-layer widths are define-by-run.
"""

from spaces.base import (
    REPORTS_DEFAULTS,
    ChoiceParam,
    FloatParam,
    IntParam,
    LayerWidthsParam,
    OptionalLogFloatParam,
    SearchSpace,
)
from spaces.mlp_architecture import MLP_ARCHITECTURE
from spaces.mlp_regularisation import MLP_REGULARISATION

# optimiser, schedule, loss and augmentation knobs that both beyond spaces search
BEYOND_TRAINING_PARAMS = (
    ChoiceParam("activation", ("relu", "gelu", "silu")),
    ChoiceParam("batch_norm", (False, True)),
    ChoiceParam("optimizer", ("adam", "adamw", "sgd")),
    FloatParam("learning_rate", 1e-5, 0.3, log=True),  # SGD wants 100x Adam's rate
    OptionalLogFloatParam("weight_decay", 1e-6, 1e-1),
    ChoiceParam("lr_schedule", ("constant", "cosine", "onecycle")),
    FloatParam("label_smoothing", 0.0, 0.2),
    IntParam("max_shift", 0, 3),  # pixels
    FloatParam("max_rotation", 0.0, 15.0),  # degrees
)

# every documented MLP once (000 experiment 3 and one 003 run are in both spaces)
MLP_EXPERIMENTS = tuple({e.key: e for e in MLP_REGULARISATION.experiments
                         + MLP_ARCHITECTURE.experiments}.values())

MLP_BEYOND = SearchSpace(
    name="mlp_beyond",
    family="mlp",
    description="MLP depth and per-layer widths with activation, batch norm, label smoothing, "
                "Adam/AdamW/SGD, constant/cosine/one-cycle schedules and on-device shift+rotation "
                "augmentation",
    params=(
        LayerWidthsParam("hidden_layers", 1, 4, (64, 128, 256, 512, 1024)),
        FloatParam("dropout", 0.0, 0.6),
        ChoiceParam("dropout_placement", ("every", "first")),
        *BEYOND_TRAINING_PARAMS,
        ChoiceParam("batch_size", (32, 64, 128, 256)),
    ),
    experiments=MLP_EXPERIMENTS,
    defaults=REPORTS_DEFAULTS,
    # augmented MLPs keep improving past 30 epochs; one epoch of 6,700 images takes ~1 s on
    # one CPU core, so 40 epochs is under a minute per batch-128 trial
    epochs=40,
    pruner_warmup_epochs=15,  # annealed schedules look poor until their rate comes down
)
