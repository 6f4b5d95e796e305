"""Read ``.safetensors`` files into numpy without the ``safetensors`` package and without trusting the header.

Format (https://github.com/huggingface/safetensors): an unsigned little-endian 64-bit header length ``N``,
``N`` bytes of UTF-8 JSON ``{name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}``, then the data buffer; offsets are relative to the buffer's start.

Every entry is checked before anything is built from it: a known dtype, non-negative integer dimensions,
``end - begin == prod(shape) * itemsize``, offsets inside the buffer, no two tensors sharing bytes. The
file is read once into a writable buffer and the arrays are views of it (no copy); ``BF16`` is widened to
float32 as the torch reader does. Errors name the file and the entry.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?", "C64": "<c8",
}
#: The format's own limit on the header (the reference implementation refuses larger ones).
MAX_HEADER_BYTES = 100_000_000


class SafetensorsError(ValueError):
    """A file that is not a well-formed safetensors file (the message names the file and the entry)."""


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """``(header dict, offset of the data buffer)``, the header checked for shape only."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: too short for a safetensors file ({size} bytes)")
        n = int.from_bytes(head, "little")
        if n < 2 or n > min(MAX_HEADER_BYTES, size - 8):
            raise SafetensorsError(f"{path}: header length {n:,} does not fit the {size:,}-byte file")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SafetensorsError(f"{path}: the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the header is a {type(header).__name__}, not a JSON object")
    return header, 8 + n


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: array}`` of a safetensors file, in header order (``__metadata__`` is not returned)."""
    path = os.fspath(path)
    header, start = read_header(path)
    buffer_size = os.path.getsize(path) - start
    entries = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name!r}"
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: expected {{dtype, shape, data_offsets}}, got {str(spec)[:100]}")
        dtype_name, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        if dtype_name not in _DTYPES:
            raise SafetensorsError(f"{where}: dtype {str(dtype_name)[:20]!r} is not supported "
                                   f"({', '.join(_DTYPES)})")
        if (not isinstance(shape, list) or len(shape) > 64
                or not all(type(d) is int and 0 <= d < 1 << 62 for d in shape)):
            raise SafetensorsError(f"{where}: shape {str(shape)[:100]} is not a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and 0 <= o <= buffer_size for o in offsets) or offsets[0] > offsets[1]):
            raise SafetensorsError(f"{where}: data_offsets {str(offsets)[:100]} are not inside the "
                                   f"{buffer_size:,}-byte data buffer")
        dtype = np.dtype(_DTYPES[dtype_name])
        if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize:
            raise SafetensorsError(f"{where}: {dtype_name}{shape} needs {math.prod(shape) * dtype.itemsize:,} "
                                   f"bytes, its offsets span {offsets[1] - offsets[0]:,}")
        entries.append((name, dtype_name, dtype, tuple(shape), offsets[0], offsets[1]))
    spans = sorted((b, e, name) for name, _, _, _, b, e in entries if e > b)
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            raise SafetensorsError(f"{path}: tensors {first!r} and {second!r} share bytes of the data buffer")
    buffer = bytearray(buffer_size)
    with open(path, "rb") as f:
        f.seek(start)
        if f.readinto(buffer) != buffer_size:
            raise SafetensorsError(f"{path}: the file changed while it was read")
    out = {}
    for name, dtype_name, dtype, shape, begin, end in entries:
        array = np.frombuffer(memoryview(buffer)[begin:end], dtype=dtype).reshape(shape)
        if dtype_name == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        out[name] = array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))
    return out
