"""Model and checkpoint files that cannot run code when loaded.

Tensors go into a safetensors file; everything else (configs, optimiser settings, epoch
histories) goes into its metadata as JSON. Loading parses the header and copies bytes:
unlike a torch.save file, a file received from someone else cannot execute anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from objectives.errors import TensorFileError

TENSOR_KEY, TUPLE_KEY, INT_KEYS = "__tensor__", "__tuple__", "__int_keys__"


def _pack(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """`value` as JSON, each tensor replaced by a reference into `tensors`."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {TENSOR_KEY: path}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: _pack(v, tensors, f"{path}.{k}") for k, v in value.items()}
        if all(isinstance(k, int) for k in value):  # optimiser state is keyed by parameter index
            return {INT_KEYS: [[k, _pack(v, tensors, f"{path}.{k}")] for k, v in value.items()]}
        raise TypeError(f"cannot store mapping keys of {path} in a tensor file")
    if isinstance(value, tuple):
        return {TUPLE_KEY: [_pack(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_pack(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {path} in a tensor file")


def _unpack(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {TENSOR_KEY}:
            return tensors[value[TENSOR_KEY]]
        if set(value) == {TUPLE_KEY}:
            return tuple(_unpack(v, tensors) for v in value[TUPLE_KEY])
        if set(value) == {INT_KEYS}:
            return {int(k): _unpack(v, tensors) for k, v in value[INT_KEYS]}
        return {k: _unpack(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v, tensors) for v in value]
    return value


def save_tensor_file(path: Path, file_format: str, content: Mapping[str, Any]) -> None:
    """Write `content` (nested plain values and tensors) atomically: a crash mid-write
    leaves the previous file intact."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(content, tensors, "content")
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": file_format, "content": json.dumps(skeleton)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_tensor_file(path: Path, file_format: str) -> dict[str, Any]:
    """The content saved by `save_tensor_file`, with tensors on the CPU; TensorFileError for a
    missing, truncated, tampered, foreign or other-version file."""
    try:
        with safe_open(str(path), "pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except FileNotFoundError:
        raise TensorFileError(f"{path} does not exist") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise TensorFileError(f"{path} is not a readable safetensors file "
                              f"({str(error).splitlines()[0] if str(error) else type(error).__name__})"
                              ) from None
    found = metadata.get("format")
    if found != file_format:
        raise TensorFileError(f"{path} has format {found!r}, expected {file_format!r}")
    try:
        content = _unpack(json.loads(metadata["content"]), tensors)
    except (KeyError, TypeError, ValueError) as error:
        raise TensorFileError(f"{path} has damaged metadata ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise TensorFileError(f"{path} has damaged metadata (content is not a mapping)")
    return content
