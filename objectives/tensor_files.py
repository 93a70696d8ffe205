"""Model and checkpoint files that cannot run code when loaded.

Tensors go into a safetensors file; everything else (configs, optimiser settings, epoch
histories) goes into its metadata as JSON. Loading parses the header and copies bytes:
unlike a torch.save file, a file received from someone else cannot execute anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
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
            return {_int_key(k): _unpack(v, tensors) for k, v in value[INT_KEYS]}
        return {k: _unpack(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v, tensors) for v in value]
    return value


def _int_key(key: Any) -> int:
    if isinstance(key, bool) or not isinstance(key, int):  # json gives floats for 1e3, Infinity
        raise ValueError(f"integer key expected, got {key!r}")
    return key


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


MAX_FILE_BYTES = 512 * 2**20  # the largest model a space builds is a few MB
MAX_HEADER_BYTES = 4 * 2**20  # tensor names, shapes and the JSON metadata
TensorInfo = tuple[tuple[int, ...], str]  # shape, safetensors dtype ("F32", "I64", ...)
HeaderCheck = Callable[[dict[str, Any], dict[str, TensorInfo]], None]
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
                      torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
                      torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def tensor_info(tensor: torch.Tensor) -> TensorInfo:
    """What a file's header must say of a tensor that is to be loaded into `tensor`."""
    return tuple(tensor.shape), SAFETENSORS_DTYPES.get(tensor.dtype, str(tensor.dtype))


def _references(value: Any) -> list[str]:
    """The tensor names a metadata skeleton refers to."""
    if isinstance(value, dict):
        if set(value) == {TENSOR_KEY} and isinstance(value[TENSOR_KEY], str):
            return [value[TENSOR_KEY]]
        return [name for v in value.values() for name in _references(v)]
    if isinstance(value, list):
        return [name for v in value for name in _references(v)]
    return []


def _unreadable(path: Path, error: BaseException) -> TensorFileError:
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return TensorFileError(f"{path} is not a readable safetensors file ({first})")


def load_tensor_file(path: Path, file_format: str, check: HeaderCheck | None = None,
                     max_bytes: int = MAX_FILE_BYTES) -> dict[str, Any]:
    """The content saved by `save_tensor_file`, with tensors on the CPU; TensorFileError for a
    missing, oversized, truncated, tampered, foreign or other-version file.

    The header is read and checked first: every tensor must be referenced by the metadata
    exactly once, and `check(skeleton, infos)` (the metadata with tensor references, and each
    tensor's shape and dtype) may raise TensorFileError before a single tensor byte is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            header_length = int.from_bytes(f.read(8), "little")
    except FileNotFoundError:
        raise TensorFileError(f"{path} does not exist") from None
    except OSError as error:
        raise _unreadable(path, error) from None
    if size > max_bytes:
        raise TensorFileError(f"{path} is {size:,} bytes, over the {max_bytes:,} a file of this kind "
                              "may have")
    if header_length > min(size - 8, MAX_HEADER_BYTES):
        raise TensorFileError(f"{path} is not a readable safetensors file (a header of {header_length:,} "
                              f"bytes in a file of {size:,}; at most {MAX_HEADER_BYTES:,} allowed)")
    try:
        with safe_open(str(path), "pt", device="cpu") as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
            infos = {name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype())
                     for name in names}
            found = metadata.get("format")
            if found != file_format:
                raise TensorFileError(f"{path} has format {found!r}, expected {file_format!r}")
            skeleton = _skeleton(path, metadata)
            references = _references(skeleton)
            if sorted(references) != sorted(names):
                raise TensorFileError(f"{path} has damaged metadata (its tensors and the references to "
                                      "them differ)")
            if check is not None:
                check(skeleton, infos)
            tensors = {name: f.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError) as error:
        if isinstance(error, TensorFileError):
            raise
        raise _unreadable(path, error) from None
    try:
        content = _unpack(skeleton, tensors)
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise TensorFileError(f"{path} has damaged metadata ({type(error).__name__}: {error})") from None
    return content


def _skeleton(path: Path, metadata: Mapping[str, str]) -> dict[str, Any]:
    try:
        skeleton = json.loads(metadata["content"])
    except (KeyError, TypeError, ValueError) as error:
        raise TensorFileError(f"{path} has damaged metadata ({type(error).__name__}: {error})") from None
    except RecursionError:
        raise TensorFileError(f"{path} has damaged metadata (nested too deeply)") from None
    if not isinstance(skeleton, dict):
        raise TensorFileError(f"{path} has damaged metadata (content is not a mapping)")
    return skeleton
