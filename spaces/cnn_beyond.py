"""CNNs beyond the reports: depth, channels, kernels, pooling, batch norm, dropout placement,
and the optimiser, schedule and augmentation knobs of `mlp_beyond`.

The seed-004 CNN (pool kernels 7, 5, 7 with strides 1, 1, 2) lies inside, so both of its
experiments replay first. Channels, kernel and pool exist only for blocks that exist.
"""

from spaces import documented as doc
from spaces.base import (
    REPORTS_DEFAULTS,
    ChoiceParam,
    ConvStackParam,
    FloatParam,
    IntParam,
    SearchSpace,
    WidthsParam,
)
from spaces.mlp_beyond import BEYOND_TRAINING_PARAMS

CNN_BEYOND = SearchSpace(
    name="cnn_beyond",
    family="cnn",
    description="CNN depth (1-4 blocks), channels, kernel sizes, pooling, convolutions per block, "
                "batch norm, dropout placement, dense head, plus the mlp_beyond training knobs",
    params=(
        ConvStackParam(
            "conv_blocks", 1, 4,
            channels=(4, 8, 16, 24, 32, 48, 64, 96, 128),
            kernels=(3, 5, 7),
            # 2x2 pools halve the map; the others are seed-004's documented pools
            pools=("max2s2", "avg2s2", "none", "max7s1", "max5s1", "avg7s2"),
        ),
        IntParam("convs_per_block", 1, 2),
        ChoiceParam("global_pool", (False, True)),
        WidthsParam("dense_layers", ((), (64,), (128,), (256,))),
        FloatParam("dropout", 0.0, 0.5),
        ChoiceParam("dropout_placement", ("head", "blocks", "both")),
        *BEYOND_TRAINING_PARAMS,
        ChoiceParam("batch_size", (16, 32, 64, 128, 256)),
    ),
    experiments=(doc.R004_EXP1, doc.R004_EXP2),
    defaults={**REPORTS_DEFAULTS, "dropout_placement": "head"},
    # a 3-block, 2-conv, 32-64-128 CNN with batch norm and one-cycle reaches ~98.5 % validation
    # on 6,700 real KMNIST images in 12-15 epochs (~12 s per epoch on one CPU core)
    epochs=15,
    pruner_warmup_epochs=6,
    # ~2x that CNN's 58 MFLOPs: keeps a trial to minutes on a CPU
    max_forward_mflops=120.0,
)
