"""Errors the PyTorch side raises for users, importable without torch so the CLI can catch them."""

from __future__ import annotations


class TensorFileError(ValueError):
    """A model or checkpoint file that cannot be used; the message names it and says why."""


class DeviceUnavailableError(RuntimeError):
    """--device names a GPU this machine does not have."""
