"""CNN regularisation: the seed-004 convolutional network with optimiser and dropout knobs.

The conv stack is fixed to the documented one; dropout acts on the flattened features.
"""

from spaces import documented as doc
from spaces.base import ChoiceParam, FloatParam, OptionalLogFloatParam, SearchSpace

CNN_REGULARISATION = SearchSpace(
    name="cnn_regularisation",
    family="cnn",
    description="seed-004 CNN (3 conv blocks, 5,750 parameters) with dropout, weight decay, "
                "learning rate and batch size",
    params=(
        FloatParam("dropout", 0.0, 0.5),
        OptionalLogFloatParam("weight_decay", 1e-6, 1e-2),
        FloatParam("learning_rate", 1e-4, 3e-2, log=True),
        ChoiceParam("batch_size", (16, 32, 64, 128, 256)),
    ),
    fixed={"conv_blocks": doc.CNN_004_BLOCKS, "dense_layers": ()},
    experiments=(doc.R004_EXP1, doc.R004_EXP2),
)
