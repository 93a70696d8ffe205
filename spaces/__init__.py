"""Search spaces: declarative data, one module per space."""

from __future__ import annotations

from spaces.base import SearchSpace, UnknownSpaceError
from spaces.cnn_beyond import CNN_BEYOND
from spaces.cnn_regularisation import CNN_REGULARISATION
from spaces.mlp_architecture import MLP_ARCHITECTURE
from spaces.mlp_beyond import MLP_BEYOND
from spaces.mlp_regularisation import MLP_REGULARISATION

ALL_SPACES: tuple[SearchSpace, ...] = (
    MLP_REGULARISATION, MLP_ARCHITECTURE, CNN_REGULARISATION,  # the documented knobs
    MLP_BEYOND, CNN_BEYOND,  # beyond the reports
)


def get_space(name: str) -> SearchSpace:
    for space in ALL_SPACES:
        if space.name == name:
            return space
    known = ", ".join(s.name for s in ALL_SPACES)
    raise UnknownSpaceError(f"unknown space {name!r}: choose one of {known} (see `kmnist-search spaces`)")
