"""TensorFlow's protocol buffer modules (``saved_model_pb2``, ``event_pb2``, ...) without importing TensorFlow.

Importing any ``tensorflow.*`` module first runs TensorFlow's package ``__init__``: the whole
library, 2-4 s of CPU. The generated ``*_pb2`` modules need none of it. While TensorFlow is not
loaded, :func:`load` lets a bare package module stand in for ``tensorflow`` (the real folder as
its path) while the protos import, and removes it afterwards; a later ``import tensorflow``
runs the real package and finds the protos loaded. Standard library only (numpy for
:func:`read_scalars`, TensorBoard's event files read the same way).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType

_LOCK = threading.Lock()


def load(name: str) -> ModuleType:
    """The module ``name`` (e.g. ``"tensorflow.core.protobuf.saved_model_pb2"``), without TensorFlow's ``__init__``."""
    if name in sys.modules or "tensorflow.python" in sys.modules:
        return importlib.import_module(name)
    with _LOCK:
        stand_in = None
        if "tensorflow" not in sys.modules:
            spec = importlib.util.find_spec("tensorflow")  # locates the package without running it
            if spec is not None and spec.submodule_search_locations:
                stand_in = ModuleType("tensorflow")
                stand_in.__path__ = list(spec.submodule_search_locations)
                sys.modules["tensorflow"] = stand_in
        try:
            return importlib.import_module(name)
        finally:
            if stand_in is not None and sys.modules.get("tensorflow") is stand_in:
                del sys.modules["tensorflow"]


def dtype_name(enum_value: int) -> str:
    """TensorFlow's name of a ``DataType`` enum value (``DT_FLOAT`` -> ``"float32"``), as ``tf.dtypes.as_dtype(v).name``."""
    types_pb2 = load("tensorflow.core.framework.types_pb2")
    name = types_pb2.DataType.Name(enum_value)
    return _RENAMED.get(name, name[3:].lower())


_RENAMED = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16"}


def read_scalars(path: str) -> list[tuple[int, str, float]]:
    """``(step, tag, value)`` of the scalar summaries in a TFRecord file of ``Event`` protos (a torn last record ends it)."""
    import struct

    import numpy as np

    event_pb2 = load("tensorflow.core.util.event_pb2")
    out = []
    with open(path, "rb") as fh:
        while len(head := fh.read(12)) == 12:  # length (uint64), its CRC; the record; its CRC
            (length,) = struct.unpack("<Q", head[:8])
            data = fh.read(length)
            if len(data) < length or len(fh.read(4)) < 4:
                break
            event = event_pb2.Event.FromString(data)
            for value in event.summary.value:
                t = value.tensor
                if t.tensor_content:
                    number = float(np.frombuffer(t.tensor_content, dtype=dtype_name(t.dtype))[0])
                else:
                    number = float(next(iter([*t.float_val, *t.double_val, *t.int64_val, *t.int_val, value.simple_value])))
                out.append((int(event.step), value.tag, number))
    return out
