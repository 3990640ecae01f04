"""Sample structure: flatten a sample (nested tuples, lists, dicts of arrays and scalars) to
leaves, describe its batch layout, and rebuild batches of the same structure.

Owns the dtype policy too: float64 leaves become float32 unless the user opts out,
object/string leaves are refused with a message that says how to fix the map, byte orders
become native, and a later sample whose dtype differs from the first one's is stored only
when every value survives (else a :class:`LayoutError` names both samples and dtypes).
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from stoke.errors import LayoutError

# A tree definition: ("leaf",) | ("tuple", [defs]) | ("list", [defs]) | ("dict", [keys], [defs])
# | ("namedtuple", type name, (fields), [defs]) -- by name, so that it travels to workers
TreeDef = tuple


LEAF: TreeDef = ("leaf",)
_PLAIN_LEAVES = (np.ndarray, np.generic, int, float)  # surely leaves: no containers


def flatten(sample: Any) -> tuple[TreeDef, list[Any]]:
    """Split a sample into its structure and its leaves (depth first, dict keys sorted)."""
    if type(sample) is tuple and all(isinstance(v, _PLAIN_LEAVES) for v in sample):
        return ("tuple", [LEAF] * len(sample)), list(sample)  # the common (x, y): no recursion
    leaves: list[Any] = []
    treedef = _flatten_into(sample, leaves)
    return treedef, leaves


def _flatten_into(node: Any, leaves: list[Any]) -> TreeDef:
    if isinstance(node, dict):
        try:
            keys = sorted(node)
        except TypeError:  # keys of mixed types ({0: x, "label": y}): by type, then value
            keys = sorted(node, key=lambda k: (type(k).__qualname__, repr(k)))
        return ("dict", keys, [_flatten_into(node[k], leaves) for k in keys])
    if isinstance(node, tuple):
        fields = getattr(type(node), "_fields", None)  # a namedtuple: a structure, by name
        if fields is not None:
            return ("namedtuple", type(node).__name__, tuple(fields),
                    [_flatten_into(v, leaves) for v in node])
        return ("tuple", [_flatten_into(v, leaves) for v in node])
    if isinstance(node, list):
        return ("list", [_flatten_into(v, leaves) for v in node])
    leaves.append(node)
    return LEAF


def unflatten(treedef: TreeDef, leaves: list[Any]) -> Any:
    """Inverse of :func:`flatten`."""
    iterator = iter(leaves)
    return _build(treedef, iterator)


def _build(treedef: TreeDef, leaves) -> Any:
    kind = treedef[0]
    if kind == "leaf":
        return next(leaves)
    if kind == "dict":
        return {k: _build(d, leaves) for k, d in zip(treedef[1], treedef[2])}
    if kind == "namedtuple":
        return _namedtuple(treedef[1], treedef[2])(*[_build(d, leaves) for d in treedef[3]])
    children = [_build(d, leaves) for d in treedef[1]]
    return tuple(children) if kind == "tuple" else children


@functools.lru_cache(maxsize=64)
def _namedtuple(name: str, fields: tuple[str, ...]) -> type:
    """A namedtuple class of this name and fields: batches of namedtuple samples are
    namedtuples with the same fields (of the batch arrays)."""
    return collections.namedtuple(name, fields)


def leaf_paths(treedef: TreeDef, prefix: str = "") -> list[str]:
    """Readable names of the leaves, e.g. ``[0]``, ``["image"]``, for error messages."""
    kind = treedef[0]
    if kind == "leaf":
        return [prefix or "sample"]
    if kind == "dict":
        out = []
        for key, child in zip(treedef[1], treedef[2]):
            out += leaf_paths(child, f"{prefix}[{key!r}]")
        return out
    if kind == "namedtuple":
        out = []
        for field, child in zip(treedef[2], treedef[3]):
            out += leaf_paths(child, f"{prefix}.{field}")
        return out
    out = []
    for i, child in enumerate(treedef[1]):
        out += leaf_paths(child, f"{prefix}[{i}]")
    return out


@dataclass(frozen=True)
class LeafSpec:
    """One array in a batch: its per-sample shape and dtype, and where it lies in a slot."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    offset: int = 0  # byte offset of row 0 within a slot

    @functools.cached_property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.numpy_dtype.itemsize


@dataclass(frozen=True)
class BatchLayout:
    """The layout of one batch slot: a structure and the spec of each leaf, ``rows`` rows."""

    treedef: TreeDef
    leaves: tuple[LeafSpec, ...]
    rows: int
    slot_bytes: int
    first_index: int = -1  # the sample the layout was taken from, for error messages
    padding: Any = None  # a stoke.data.padding.PaddedLayout for padded_batch / bucket_by_length

    @classmethod
    def from_sample(cls, sample_leaves: list[np.ndarray], treedef: TreeDef, rows: int,
                    first_index: int = -1) -> BatchLayout:
        specs = []
        offset = 0
        for path, leaf in zip(leaf_paths(treedef), sample_leaves):
            spec = LeafSpec(path, tuple(leaf.shape), leaf.dtype.str, offset)
            offset += _align(spec.row_bytes * rows)
            specs.append(spec)
        return cls(treedef, tuple(specs), rows, max(offset, 64), first_index)

    def describe(self) -> str:
        return ", ".join(f"{s.path}: {s.dtype} {s.shape}" for s in self.leaves)


def _align(nbytes: int, to: int = 64) -> int:
    return (nbytes + to - 1) // to * to


@dataclass(frozen=True)
class DtypePolicy:
    """What leaves may be: float64 is cast to float32 unless ``keep_float64``."""

    keep_float64: bool = False


def to_leaf_arrays(leaves: list[Any], policy: DtypePolicy, index: int,
                   treedef: TreeDef) -> tuple[list[np.ndarray], list[str]]:
    """Turn a sample's leaves into numpy arrays under the dtype policy.

    Returns the arrays and the paths of leaves that were cast from float64 (for the warning).
    """
    arrays = []
    cast = []
    for position, leaf in enumerate(leaves):  # paths are named only when needed (hot path)
        array = np.asarray(leaf)
        if not array.dtype.isnative:  # big-endian data: delivered in native order, always
            array = array.astype(array.dtype.newbyteorder("="))
        if array.dtype == np.float64 and not policy.keep_float64:
            if type(leaf) is not float:  # a literal 1.0 in user code is no dataset
                cast.append(leaf_paths(treedef)[position])
            try:
                with np.errstate(over="raise"):
                    array = array.astype(np.float32)
            except FloatingPointError:
                raise LayoutError(
                    f"sample {index}, field {leaf_paths(treedef)[position]}: float64 values "
                    f"up to {np.abs(array).max():g} do not fit in float32 (stoke's default for "
                    "float64). Scale them in your map function, or keep float64 with "
                    ".batch(..., keep_float64=True)."
                ) from None
        elif array.dtype.kind in "OUSV":
            path = leaf_paths(treedef)[position]
            raise LayoutError(
                f"sample {index}, field {path}: dtype {array.dtype} cannot go in a batch array. "
                "stoke batches numeric arrays: decode or encode this field in your map "
                "function (e.g. bytes -> np.frombuffer, strings -> token ids)."
            )
        arrays.append(array)
    return arrays, cast


def check_fits(layout: BatchLayout, arrays: list[np.ndarray], treedef: TreeDef, index: int) -> None:
    """Raise :class:`LayoutError` naming the sample and both shapes when it does not fit."""
    first_index = layout.first_index
    if treedef != layout.treedef:
        raise structure_mismatch(index, treedef, first_index, layout.treedef)
    for spec, array in zip(layout.leaves, arrays):
        if array.shape != spec.shape:
            raise LayoutError(
                f"sample {index}, field {spec.path} has shape {tuple(array.shape)}, but "
                f"sample {first_index} has shape {spec.shape}; samples in one batch must "
                "have the same shape. For variable-length arrays use "
                ".padded_batch(batch_size) (pads the first axis to the batch's longest) or "
                ".bucket_by_length(...); else resize or pad in your map function "
                "(e.g. crop to a fixed size), or use batch size 1."
            )
        if array.dtype != spec.numpy_dtype and not fits_dtype(array, spec.numpy_dtype):
            raise LayoutError(
                f"sample {index}, field {spec.path} has dtype {array.dtype}"
                f"{_value_range(array)}, but sample {first_index} has {spec.numpy_dtype}, "
                "which the batch is laid out in: storing it would change its values. Return "
                f"the same dtype for every sample (e.g. np.asarray(value, {_wider(array, spec)!r}) "
                "in your map function)."
            )


def fits_dtype(array: np.ndarray, target: np.dtype) -> bool:
    """Can ``array`` be stored as ``target`` without changing any value? A safe cast always
    can; a narrowing cast of the same kind (uint16 -> uint8, float32 -> float16, int64 ->
    float32) only when every value survives it. Checked on the slow path only: samples of
    exactly the layout's dtype never come here."""
    if np.can_cast(array.dtype, target, "safe"):
        return True
    if not np.can_cast(array.dtype, target, "same_kind"):
        return False
    if array.size == 0:
        return True
    if target.kind in "iu":  # from bool/int/uint: every value within the target's range
        info = np.iinfo(target)
        return bool(info.min <= array.min() and array.max() <= info.max)
    try:
        with np.errstate(over="raise", invalid="raise"):
            stored = array.astype(target)
    except FloatingPointError:  # a finite value would become inf
        return False
    if array.dtype.kind in "biu":  # ints into floats: every integer exactly representable
        return bool(np.array_equal(stored.astype(array.dtype), array))
    return True  # float narrowing within range: rounding, as float64 -> float32 rounds


def _value_range(array: np.ndarray) -> str:
    if array.size == 0 or array.dtype.kind not in "biuf":
        return ""
    low, high = array.min(), array.max()
    return f" (value {low})" if low == high else f" (values {low}..{high})"


def _wider(array: np.ndarray, spec: LeafSpec) -> str:
    return np.result_type(array.dtype, spec.numpy_dtype).name


def structure_mismatch(index: int, treedef: TreeDef, first_index: int,
                       first_treedef: TreeDef) -> LayoutError:
    """The error for a sample whose structure differs from the first sample's: where they
    first differ, both shapes there, and, when a Python list is involved (a list is a
    structure, one field per item, as in torch's ``default_collate``), how to make it one
    array (token ids as a Hugging Face dataset's rows give them)."""
    path, mine, first = _first_difference(treedef, first_treedef)
    message = (
        f"sample {index} has a different structure than sample {first_index} at "
        f"{path or 'the top'}: {_describe_node(mine)} vs {_describe_node(first)}. Every "
        "sample must have the same structure (same tuple length / dict keys)."
    )
    if "list" in (mine[0], first[0]):
        message += (
            " A Python list is a structure (one field per item); a variable-length "
            "sequence (token ids, e.g. a Hugging Face dataset's rows) must be one array: "
            f"make it np.asarray(sample{path}) in a map before .padded_batch()."
        )
    return LayoutError(message)


def _first_difference(mine: TreeDef, first: TreeDef, path: str = "") -> tuple[str, TreeDef, TreeDef]:
    kind = mine[0]
    if kind != first[0] or kind == "leaf":
        return path, mine, first
    if kind == "dict":
        if mine[1] != first[1]:
            return path, mine, first
        children = [(f"{path}[{key!r}]", a, b) for key, a, b in zip(mine[1], mine[2], first[2])]
    elif kind == "namedtuple":
        if mine[1:3] != first[1:3]:
            return path, mine, first
        children = [(f"{path}.{name}", a, b) for name, a, b in zip(mine[2], mine[3], first[3])]
    else:
        if len(mine[1]) != len(first[1]):
            return path, mine, first
        children = [(f"{path}[{i}]", a, b) for i, (a, b) in enumerate(zip(mine[1], first[1]))]
    for child_path, a, b in children:
        if a != b:
            return _first_difference(a, b, child_path)
    return path, mine, first


def _describe_node(treedef: TreeDef) -> str:
    """A short description: a long list of arrays is "a list of 300 items", not 300 names."""
    if treedef[0] in ("list", "tuple") and len(treedef[1]) > 4:
        return f"a {treedef[0]} of {len(treedef[1])} items"
    if treedef[0] == "list" and all(child == LEAF for child in treedef[1]):
        return f"a list of {len(treedef[1])} items"
    return _describe_tree(treedef)


def _describe_tree(treedef: TreeDef) -> str:
    kind = treedef[0]
    if kind == "leaf":
        return "array"
    if kind == "dict":
        return "{" + ", ".join(f"{k!r}: {_describe_tree(d)}" for k, d in zip(treedef[1], treedef[2])) + "}"
    if kind == "namedtuple":
        inner = ", ".join(f"{f}={_describe_tree(d)}" for f, d in zip(treedef[2], treedef[3]))
        return f"{treedef[1]}({inner})"
    inner = ", ".join(_describe_tree(d) for d in treedef[1])
    return f"({inner})" if kind == "tuple" else f"[{inner}]"
