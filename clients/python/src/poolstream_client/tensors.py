"""`poolstream.v1.Tensor` <-> numpy arrays and torch tensors.

A Tensor's `data` is little-endian and row-major (C order) with no padding;
DTYPE_BINARY packs one bit per element, most significant bit first
(numpy.packbits order), zero-padding the last byte. numpy has no bfloat16:
`to_numpy` widens it to float32 (exactly), `from_numpy(..., DType.BFLOAT16)`
rounds float32 to nearest-even; `to_torch`/`from_torch` keep torch.bfloat16.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ._messages import v1

if TYPE_CHECKING:
    import torch

DType = v1.DType
Tensor = v1.Tensor

__all__ = [
    "NUMPY_DTYPES",
    "DType",
    "Tensor",
    "dtype_name",
    "from_numpy",
    "from_torch",
    "itemsize",
    "to_numpy",
    "to_torch",
]

#: Tensor dtypes with a numpy equivalent (little-endian).
NUMPY_DTYPES: dict[v1.DType, np.dtype] = {
    DType.FLOAT32: np.dtype("<f4"),
    DType.FLOAT16: np.dtype("<f2"),
    DType.FLOAT64: np.dtype("<f8"),
    DType.INT8: np.dtype("i1"),
    DType.UINT8: np.dtype("u1"),
    DType.INT16: np.dtype("<i2"),
    DType.INT32: np.dtype("<i4"),
    DType.INT64: np.dtype("<i8"),
    DType.BOOL: np.dtype("?"),
}
_FROM_NUMPY = (
    {dt.newbyteorder("="): d for d, dt in NUMPY_DTYPES.items()}
    | {dt.newbyteorder("<"): d for d, dt in NUMPY_DTYPES.items()}
    | {dt.newbyteorder(">"): d for d, dt in NUMPY_DTYPES.items()}
)


def dtype_name(dtype: v1.DType) -> str:
    """The protobuf name of a DType, e.g. "DTYPE_FLOAT32"."""
    return f"DTYPE_{DType(dtype).name}"


def itemsize(dtype: v1.DType) -> int:
    """Bytes per element (0 for DTYPE_BINARY, which packs bits)."""
    if dtype == DType.BFLOAT16:
        return 2
    if dtype == DType.BINARY:
        return 0
    try:
        return NUMPY_DTYPES[dtype].itemsize
    except KeyError:
        raise ValueError(f"tensor dtype {dtype!r} has no element size") from None


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _check_length(t: v1.Tensor, shape: tuple[int, ...]) -> None:
    n = _numel(shape)
    want = (n + 7) // 8 if t.dtype == DType.BINARY else n * itemsize(t.dtype)
    if len(t.data) != want:
        raise ValueError(
            f"{DType(t.dtype).name} tensor of shape {list(shape)} needs {want} bytes of data, has {len(t.data)}"
        )


def to_numpy(t: v1.Tensor) -> np.ndarray:
    """The tensor as a numpy array of its shape.

    float16/32/64 and integer dtypes keep their type; BFLOAT16 becomes float32;
    BINARY becomes uint8 0/1 bits. A tensor with only `float_values` (no
    `data`) gives float32.
    """
    shape = tuple(int(s) for s in t.shape)
    if not t.data and t.float_values:
        return np.asarray(t.float_values, dtype=np.float32).reshape(shape)
    if t.dtype == DType.UNSPECIFIED:
        raise ValueError("tensor has DTYPE_UNSPECIFIED and no float_values")
    _check_length(t, shape)
    buf = np.frombuffer(t.data, dtype=np.uint8)
    if t.dtype == DType.BINARY:
        return np.unpackbits(buf, count=_numel(shape), bitorder="big").reshape(shape)
    if t.dtype == DType.BFLOAT16:
        bits = buf.view("<u2").astype("<u4") << 16
        return bits.view("<f4").astype(np.float32).reshape(shape)
    return buf.view(NUMPY_DTYPES[t.dtype]).astype(NUMPY_DTYPES[t.dtype].newbyteorder("=")).reshape(shape)


def _bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    f = np.ascontiguousarray(values, dtype="<f4")
    u = f.view("<u4").astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
    return np.where(np.isnan(f), np.uint16(0x7FC0), rounded).astype("<u2")


def from_numpy(array: Any, dtype: v1.DType | None = None) -> v1.Tensor:
    """A Tensor holding `array` (anything numpy.asarray takes).

    `dtype` picks the wire type (the array is cast to it); unset, it follows the
    array's numpy dtype. DType.BINARY packs `array > 0`; DType.BFLOAT16 rounds.
    """
    a = np.asarray(array)
    if dtype is None or dtype == DType.UNSPECIFIED:
        try:
            dtype = _FROM_NUMPY[a.dtype]
        except KeyError:
            raise ValueError(f"numpy dtype {a.dtype} has no poolstream DType; pass dtype=") from None
    dtype = DType(dtype)
    shape = [int(s) for s in a.shape]
    if dtype == DType.BINARY:
        data = np.packbits(a.reshape(-1) > 0, bitorder="big").tobytes()
    elif dtype == DType.BFLOAT16:
        data = _bfloat16_bits(a).tobytes()
    elif dtype in NUMPY_DTYPES:
        data = np.ascontiguousarray(a, dtype=NUMPY_DTYPES[dtype]).tobytes()
    else:
        raise ValueError(f"cannot encode a tensor as {dtype!r}")
    return v1.Tensor(dtype=dtype, shape=shape, data=data)


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_torch/from_torch need torch: pip install 'poolstream-client[torch]'") from e
    return torch


def to_torch(t: v1.Tensor) -> torch.Tensor:
    """The tensor as a CPU torch tensor (BFLOAT16 stays torch.bfloat16)."""
    torch = _torch()
    if t.dtype == DType.BFLOAT16 and t.data:
        shape = tuple(int(s) for s in t.shape)
        _check_length(t, shape)
        bits = np.frombuffer(t.data, dtype="<i2").astype(np.int16)
        return torch.from_numpy(bits.copy()).view(torch.bfloat16).reshape(shape)
    return torch.from_numpy(np.ascontiguousarray(to_numpy(t)))


def from_torch(x: torch.Tensor, dtype: v1.DType | None = None) -> v1.Tensor:
    """A Tensor holding a torch tensor (moved to CPU; bfloat16 kept as is)."""
    torch = _torch()
    x = x.detach().to("cpu").contiguous()
    if x.dtype == torch.bfloat16 and dtype in (None, DType.UNSPECIFIED, DType.BFLOAT16):
        bits = x.view(torch.int16).numpy().astype("<i2")
        return v1.Tensor(dtype=DType.BFLOAT16, shape=list(x.shape), data=bits.tobytes())
    if x.dtype == torch.bfloat16:
        x = x.to(torch.float32)
    return from_numpy(x.numpy(), dtype)
