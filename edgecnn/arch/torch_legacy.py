"""Read a torch checkpoint in the legacy (pre-1.6, non-zip) format into numpy, without torch.

The legacy format is four pickles followed by raw tensor bytes:

1. the magic number ``0x1950a86a20f9469cfc6c``, 2. the protocol version ``1001``,
3. system info (endianness, type sizes), 4. the state dict, whose tensors are
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` calls on storages
given as persistent ids ``('storage', torch.FloatStorage, key, location, numel, view)``,
5. the list of storage keys, then for each key an int64 element count and the storage's bytes.

Unpickling runs code named by the file, so this reader allows only the few globals a state
dict needs (``collections.OrderedDict``, ``_rebuild_tensor_v2``, the storage types), each mapped
to a harmless stand-in; any other global is refused before anything is called.
"""
from __future__ import annotations

import collections
import os
import pickle
from typing import BinaryIO, NamedTuple

import numpy as np

from edgecnn.errors import EdgecnnError

__all__ = ["read_legacy_state_dict"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
# torch storage class -> little-endian numpy dtype of its elements.
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class _StorageType(NamedTuple):
    """Stand-in for the class ``torch.FloatStorage`` etc.; not callable."""

    dtype: str


class _Storage(NamedTuple):
    key: str
    dtype: str
    numel: int


class _TensorRef(NamedTuple):
    """What ``_rebuild_tensor_v2`` returns here: where the tensor's elements will be."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"tensor built from {type(storage).__name__}, expected a storage")
    return _TensorRef(storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride)))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing pickle global {module}.{name} (not part of a tensor state dict)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view = pid
        if view is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        storage = self.storages.setdefault(str(key), _Storage(str(key), storage_type.dtype, int(numel)))
        if storage != (str(key), storage_type.dtype, int(numel)):
            raise pickle.UnpicklingError(f"storage {key} declared twice with different types or sizes")
        return storage


def _read_storages(f: BinaryIO, keys: list, declared: dict[str, _Storage]) -> dict[str, np.ndarray]:
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(declared):
        raise pickle.UnpicklingError("the storage key list does not match the storages the tensors use")
    buffers = {}
    for key in keys:
        storage = declared[key]
        numel = int.from_bytes(f.read(8), "little", signed=True)
        if numel != storage.numel:
            raise pickle.UnpicklingError(f"storage {key}: {numel} elements on disk, {storage.numel} declared")
        nbytes = numel * np.dtype(storage.dtype).itemsize
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise pickle.UnpicklingError(f"storage {key}: file ends after {len(data)} of {nbytes} bytes")
        buffers[key] = np.frombuffer(data, dtype=storage.dtype)
    if f.read(1):
        raise pickle.UnpicklingError("unexpected bytes after the last storage")
    return buffers


def _materialize(name: str, ref: _TensorRef, buffer: np.ndarray) -> np.ndarray:
    if len(ref.size) != len(ref.stride) or min(ref.size + ref.stride, default=0) < 0 or ref.offset < 0:
        raise pickle.UnpicklingError(f"{name}: bad size {ref.size} / stride {ref.stride}")
    if 0 in ref.size:
        return np.zeros(ref.size, buffer.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= buffer.size:
        raise pickle.UnpicklingError(f"{name}: reads element {last} of a {buffer.size}-element storage")
    strides = tuple(s * buffer.itemsize for s in ref.stride)
    view = np.lib.stride_tricks.as_strided(buffer[ref.offset:], shape=ref.size, strides=strides)
    return np.array(view, dtype=buffer.dtype.newbyteorder("="))


def read_legacy_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a state dict saved by ``torch.save`` before torch 1.6 (the non-zip format).

    Args:
        path: the ``.pth`` file.

    Returns:
        Parameter name -> numpy array (a copy, in torch's layout, e.g. OIHW), in file order.

    Raises:
        EdgecnnError: not a legacy torch checkpoint, truncated or corrupt, or the pickle names a
            global other than those a tensor state dict needs (e.g. ``os.system``).

    Example:
        >>> sd = read_legacy_state_dict("mobilenet_v2-b0353104.pth")  # doctest: +SKIP
        >>> sd["features.0.0.weight"].shape  # doctest: +SKIP
        (32, 3, 3, 3)
    """
    try:
        with open(path, "rb") as f:
            if _RestrictedUnpickler(f).load() != MAGIC_NUMBER:
                raise pickle.UnpicklingError("no legacy torch magic number (torch >= 1.6 writes a zip file)")
            if _RestrictedUnpickler(f).load() != PROTOCOL_VERSION:
                raise pickle.UnpicklingError("unknown torch serialization protocol version")
            sys_info = _RestrictedUnpickler(f).load()
            if not isinstance(sys_info, dict) or not sys_info.get("little_endian"):
                raise pickle.UnpicklingError("only little-endian checkpoints are supported")
            unpickler = _RestrictedUnpickler(f)
            state = unpickler.load()
            keys = _RestrictedUnpickler(f).load()
            buffers = _read_storages(f, keys, unpickler.storages)
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"top-level object is a {type(state).__name__}, not a state dict")
        arrays = {}
        for name, ref in state.items():
            if not isinstance(ref, _TensorRef):
                raise pickle.UnpicklingError(f"{name!r} is a {type(ref).__name__}, not a tensor")
            arrays[str(name)] = _materialize(str(name), ref, buffers[ref.storage.key])
        return arrays
    except OSError as e:
        raise EdgecnnError(f"cannot read torch checkpoint {str(path)!r}: {e}") from e
    except Exception as e:  # pickle raises many types on a corrupt stream
        raise EdgecnnError(
            f"torch checkpoint {str(path)!r} is not a readable legacy state dict: {type(e).__name__}: {e}"
        ) from e
