"""JSON state for the monitor's analytics: no pickle, an explicit type list.

The monitor's state travels in Kafka messages (changelog / checkpoint
records), so it must be safe to load from a topic anyone with write access
could fill. Nothing here executes code named by the data:

* plain JSON values pass through;
* numpy arrays are stored as ``{"__nd__": dtype, "shape": [...], "data":
  base64(zlib(bytes))}`` with the dtype checked against a short list;
* River objects (drift detectors, the anomaly detector) are stored as their
  attribute dictionaries under ``{"__river__": "module.Class"}`` and only
  classes named in :func:`trusted_river_types` (``TRUSTED_RIVER_TYPES``) are rebuilt; River's Rust
  helpers (ADWIN's window, the exponentially weighted mean) are stored as
  their own binary state (``__getstate__``), which is plain data; a bound
  method of the object itself (Page-Hinkley's test) is stored by name and
  re-bound only to a method its trusted class defines.

Anything else raises :class:`StateError`.

Examples
--------
>>> import numpy as np
>>> from driftline.streams.state import dumps, loads
>>> loads(dumps({"a": np.arange(3), "b": (1, 2)}))["a"].tolist()
[0, 1, 2]
>>> loads(b'{"x": {"__river__": "os.system"}}')
Traceback (most recent call last):
...
driftline.streams.state.StateError: state: type 'os.system' is not in the trusted type list
"""

from __future__ import annotations

import base64
import collections
import inspect
import json
import random
import zlib
from typing import Any

import numpy as np

from driftline.catalog import DETECTORS
from driftline.river_modules import river_class
from driftline.errors import DriftlineError

__all__ = ["StateError", "trusted_river_types", "encode_value", "decode_value", "dumps", "loads"]

_trusted_cache: tuple[int, frozenset[str]] = (-1, frozenset())


def trusted_river_types() -> frozenset[str]:
    """Classes that :func:`decode_value` may rebuild from their attributes:
    the River types every registered detector declares its state holds
    (``trusted``, :data:`driftline.catalog.DETECTORS`).

    >>> "river.drift.adwin.ADWIN" in trusted_river_types()
    True
    """
    global _trusted_cache
    revision, types = _trusted_cache
    DETECTORS.load()  # the plug-ins register (and bump the revision) on the first call
    if revision != DETECTORS.revision:
        types = frozenset(t for entry in DETECTORS.entries() for t in (entry.trusted or ()))
        _trusted_cache = (DETECTORS.revision, types)
    return types


def __getattr__(name: str) -> Any:
    # TRUSTED_RIVER_TYPES is derived from the detector catalog on first use
    # (importing this module must not import every detector).
    if name == "TRUSTED_RIVER_TYPES":
        return trusted_river_types()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_DTYPES = ("float64", "int64", "uint8", "bool", "int32", "float32")
#: River's Rust helpers: stored as their own (plain-data) binary state.
_RUST_TYPES = ("river._river_rust.drift.AdaptiveWindowing", "river._river_rust.stats.RsEWMean")


def _new_rust(name: str) -> Any:
    """A fresh River Rust helper, to receive a stored binary state."""
    if name == "river._river_rust.drift.AdaptiveWindowing":
        from river._river_rust.drift import AdaptiveWindowing

        return AdaptiveWindowing(delta=0.002, clock=32, max_buckets=5, min_window_length=5, grace_period=10)
    if name == "river._river_rust.stats.RsEWMean":
        from river._river_rust.stats import RsEWMean

        return RsEWMean(0.5)
    raise StateError(f"state: type {name!r} is not in the trusted type list")


class StateError(DriftlineError, ValueError):
    """A state record is malformed or names a type that is not trusted."""


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def encode_value(value: Any) -> Any:
    """Turn ``value`` into JSON-safe data (see the module docstring)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if f != f or f in (float("inf"), float("-inf")):
            return {"__float__": repr(f)}
        return f
    if isinstance(value, np.ndarray):
        if value.dtype.name not in _DTYPES:
            raise StateError(f"state: numpy dtype {value.dtype.name!r} cannot be stored")
        data = np.ascontiguousarray(value).tobytes()
        return {"__nd__": value.dtype.name, "shape": list(value.shape),
                "data": base64.b64encode(zlib.compress(data, 1)).decode("ascii")}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k.startswith("__") for k in value):
            return {k: encode_value(v) for k, v in value.items()}
        # Non-string or dunder keys: keep the key types.
        return {"__dict__": [[encode_value(k), encode_value(v)] for k, v in value.items()],
                "default": _default_factory_name(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode_value(v) for v in value]}
    if isinstance(value, collections.deque):
        return {"__deque__": [encode_value(v) for v in value], "maxlen": value.maxlen}
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, random.Random):
        version, internal, gauss = value.getstate()
        return {"__random__": [version, list(internal), gauss]}
    name = _qualname(value)
    if name in _RUST_TYPES:
        return {"__rust__": name, "state": base64.b64encode(value.__getstate__()).decode("ascii")}
    if name in trusted_river_types():
        attrs = {}
        for key, item in vars(value).items():
            if inspect.ismethod(item) and item.__self__ is value:
                # A bound method of the object itself (PageHinkley's test by mode).
                attrs[key] = {"__method__": item.__func__.__name__}
            else:
                attrs[key] = encode_value(item)
        return {"__river__": name, "attrs": attrs}
    raise StateError(f"state: cannot store an object of type {name!r}")


def _default_factory_name(value: dict) -> str | None:
    if isinstance(value, collections.defaultdict):
        factory = value.default_factory
        if factory in (int, float, list):
            return factory.__name__
        raise StateError(f"state: defaultdict factory {factory!r} cannot be stored")
    return None


def decode_value(data: Any) -> Any:
    """Inverse of :func:`encode_value`; refuses untrusted types."""
    if data is None or isinstance(data, (bool, str, int, float)):
        return data
    if isinstance(data, list):
        return [decode_value(v) for v in data]
    if not isinstance(data, dict):
        raise StateError(f"state: unexpected value {data!r}")
    if "__nd__" in data:
        dtype = data["__nd__"]
        if dtype not in _DTYPES:
            raise StateError(f"state: numpy dtype {dtype!r} is not allowed")
        try:
            raw = zlib.decompress(base64.b64decode(data["data"]))
            return np.frombuffer(raw, dtype=dtype).reshape(data["shape"]).copy()
        except (ValueError, zlib.error, TypeError, KeyError) as error:
            raise StateError(f"state: bad array ({error})") from None
    if "__float__" in data:
        return float(data["__float__"])
    if "__tuple__" in data:
        return tuple(decode_value(v) for v in data["__tuple__"])
    if "__deque__" in data:
        return collections.deque((decode_value(v) for v in data["__deque__"]), maxlen=data.get("maxlen"))
    if "__dict__" in data:
        factory = {"int": int, "float": float, "list": list, None: None}.get(data.get("default"), "bad")
        if factory == "bad":
            raise StateError(f"state: defaultdict factory {data.get('default')!r} is not allowed")
        items = [(_hashable(decode_value(k)), decode_value(v)) for k, v in data["__dict__"]]
        return collections.defaultdict(factory, items) if factory else dict(items)
    if "__random__" in data:
        version, internal, gauss = data["__random__"]
        rng = random.Random()
        rng.setstate((version, tuple(internal), gauss))
        return rng
    if "__rust__" in data:
        helper = _new_rust(data["__rust__"])
        try:
            helper.__setstate__(base64.b64decode(data["state"]))
        except (TypeError, ValueError, KeyError) as error:
            # Not bytes, not base64 (binascii.Error is a ValueError) or no state. (Bytes the
            # Rust side cannot parse make it panic: pyo3's PanicException, a BaseException.)
            raise StateError(f"state: bad {data['__rust__']} state ({error})") from None
        return helper
    if "__river__" in data:
        name = data["__river__"]
        if name not in trusted_river_types():
            raise StateError(f"state: type {name!r} is not in the trusted type list")
        cls = river_class(name)
        obj = cls.__new__(cls)
        raw_attrs = data.get("attrs", {})
        if not isinstance(raw_attrs, dict):
            raise StateError(f"state: attributes of {name} must be an object")
        for key, item in raw_attrs.items():
            if isinstance(item, dict) and "__method__" in item:
                method = item["__method__"]
                if not isinstance(method, str) or not callable(getattr(cls, method, None)) \
                        or method.startswith("__"):
                    raise StateError(f"state: {name} has no method {method!r}")
                setattr(obj, key, getattr(obj, method))
            else:
                setattr(obj, key, decode_value(item))
        return obj
    bad = [k for k in data if k.startswith("__")]
    if bad:
        raise StateError(f"state: type {bad[0]!r} is not in the trusted type list")
    return {k: decode_value(v) for k, v in data.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def dumps(value: Any) -> bytes:
    """Encode to compact JSON bytes."""
    return json.dumps(encode_value(value), separators=(",", ":"), allow_nan=False).encode("utf-8")


def loads(data: bytes | str) -> Any:
    """Decode bytes from :func:`dumps`; raises :class:`StateError` on anything else."""
    try:
        raw = json.loads(data)
    except ValueError as error:
        raise StateError(f"state: not valid JSON ({error})") from None
    return decode_value(raw)
