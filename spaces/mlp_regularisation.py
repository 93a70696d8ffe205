"""MLP regularisation: dropout, weight decay, learning rate and batch size around fixed widths.

The knobs the reports turned by hand. Widths are one categorical choice holding every
documented MLP so each documented experiment can be replayed exactly.
"""

from spaces import documented as doc
from spaces.base import ChoiceParam, FloatParam, OptionalLogFloatParam, SearchSpace, WidthsParam

# the regularisation and optimiser knobs every MLP space searches (mlp_architecture too)
MLP_TRAINING_PARAMS = (
    FloatParam("dropout", 0.0, 0.6),
    ChoiceParam("dropout_placement", ("every", "first")),
    OptionalLogFloatParam("weight_decay", 1e-6, 1e-2),
    FloatParam("learning_rate", 1e-5, 1e-2, log=True),
    ChoiceParam("batch_size", (32, 64, 128, 256)),
)

MLP_REGULARISATION = SearchSpace(
    name="mlp_regularisation",
    family="mlp",
    description="MLP dropout, weight decay, learning rate, batch size and hidden widths",
    params=(
        WidthsParam(
            "hidden_layers",
            (
                (128,), (256,), (512,), (1024,),
                (256, 128), (512, 256), (1024, 512),
                (256, 128, 64), (512, 256, 128), (1024, 512, 256),
                (512, 256, 128, 64),
            ),
        ),
        *MLP_TRAINING_PARAMS,
    ),
    experiments=(
        doc.R000_EXP1, doc.R000_EXP2, doc.R000_EXP3, doc.R002_EXP1, doc.R002_EXP2,
        *doc.R003_EXPERIMENTS,
    ),
)
