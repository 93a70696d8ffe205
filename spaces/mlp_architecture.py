"""MLP depth and per-layer widths, with the regularisation knobs alongside.

Widths are suggested define-by-run: `width_3` exists only in trials with three or more
hidden layers.
"""

from spaces import documented as doc
from spaces.base import LayerWidthsParam, SearchSpace
from spaces.mlp_regularisation import MLP_TRAINING_PARAMS

MLP_ARCHITECTURE = SearchSpace(
    name="mlp_architecture",
    family="mlp",
    description="MLP depth (1-4 hidden layers) and a width per layer, plus dropout and optimiser",
    params=(
        LayerWidthsParam("hidden_layers", 1, 4, (64, 128, 256, 512, 1024)),
        *MLP_TRAINING_PARAMS,
    ),
    experiments=(
        doc.R001_ARCH1, doc.R001_ARCH2, doc.R002_EXP3, doc.R000_EXP3,
        doc.R003_EXPERIMENTS[4],  # Experiment 3: Increased Model Complexity
    ),
)
