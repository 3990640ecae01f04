"""Variable length in the ring: ``padded_batch`` and the padded batch layout.

Owns how a batch of samples whose arrays differ in their first axis (tokens, audio, boxes)
lies in a ring slot and how it is delivered; the plan (which samples form a batch) and the
loader's scheduling are not its business (bucketing: :mod:`stoke.data.buckets`).

- **Layout.** Every array leaf of the first sample with at least one axis is *padded*: its
  slot rows hold ``capacity`` entries of its first axis (the other axes must match across
  samples). One hidden int32 leaf per padded leaf holds each row's true length.
- **Capacity.** ``max_length=`` fixes it (a longer sample is a :class:`LayoutError` naming
  it). Without it the capacity starts at the first sample's length rounded up to a power of
  two, and grows when a longer sample comes: the worker reports
  :class:`PaddedLengthError`, the loader lets the tasks in flight finish, lays the ring out
  again at twice the capacity (or the length needed) and re-runs the batches from the
  iterator's state. Nothing is skipped or delivered twice; ``log2(longest / first)`` such
  regrowths at most, each a short stall. Pass ``max_length`` to avoid them.
- **Writing.** The worker writes each sample's rows, then pads only up to the batch's
  longest sample, not to the capacity.
- **Delivery.** Views of the slot cut to the batch's longest (rounded up to
  ``pad_to_multiple_of`` when given: fewer distinct shapes for XLA to compile): no copy. With ``lengths=``
  ``"lengths"`` (int32, one per sample) or ``"mask"`` (bool, ``True`` on real entries), a
  padded leaf that sits in a dict under key ``k`` gets a sibling ``k + "_lengths"`` (or
  ``k + "_mask"``); Keras models take dict inputs, so ``(x, y)`` stays ``(x, y)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stoke.data.program import FILTERED, SampleProgram
from stoke.data.structure import (
    LEAF,
    BatchLayout,
    LeafSpec,
    TreeDef,
    flatten,
    leaf_paths,
    structure_mismatch,
    to_leaf_arrays,
    unflatten,
)
from stoke.errors import LayoutError

LENGTH_MODES = (None, "lengths", "mask")


@dataclass(frozen=True)
class PaddingSpec:
    """What ``padded_batch`` asked for: the pad value, a fixed capacity (or None: grown),
    and the extra leaf per padded array (None, "lengths" or "mask")."""

    pad_value: float = 0
    max_length: int | None = None
    lengths: str | None = None
    pad_to_multiple_of: int | None = None

    def width(self, longest: int, capacity: int) -> int:
        """How wide a batch whose longest sample is ``longest`` is delivered: ``longest``,
        or rounded up to ``pad_to_multiple_of`` (within the capacity)."""
        multiple = self.pad_to_multiple_of
        if multiple is None:
            return longest
        return min(-(-longest // multiple) * multiple, capacity)

    def capacity(self, length: int) -> int:
        """A capacity that holds ``length``: a power of two (a multiple of
        ``pad_to_multiple_of`` when given), or ``max_length`` when given."""
        if self.max_length is not None:
            return self.max_length
        capacity = initial_capacity(length)
        if self.pad_to_multiple_of is not None:
            capacity = -(-capacity // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return capacity

    def __post_init__(self) -> None:
        if self.lengths not in LENGTH_MODES:
            raise ValueError(f"lengths must be one of {LENGTH_MODES}. Received: "
                             f"lengths={self.lengths!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int)
                                            or self.max_length < 1):
            raise ValueError("max_length must be a positive int or None. Received: "
                             f"max_length={self.max_length!r}")
        if self.pad_to_multiple_of is not None and (
                not isinstance(self.pad_to_multiple_of, int) or self.pad_to_multiple_of < 1):
            raise ValueError("pad_to_multiple_of must be a positive int or None. Received: "
                             f"pad_to_multiple_of={self.pad_to_multiple_of!r}")
        if not np.isscalar(self.pad_value):
            raise ValueError(f"pad_value must be a number. Received: {self.pad_value!r}")


class PaddedLengthError(LayoutError):
    """A sample is longer than the padded capacity of one of its arrays. Raised to the user
    only when ``max_length`` was given; otherwise the loader grows the capacity."""

    def __init__(self, index: int, path: str, length: int, capacity: int, fixed: bool) -> None:
        self.index = index
        self.path = path
        self.length = length
        self.capacity = capacity
        self.fixed = fixed
        super().__init__(
            f"sample {index}, field {path} has length {length} along its first axis, but "
            f"padded_batch(max_length={capacity}) pads to at most {capacity}. Raise "
            "max_length, truncate in your map function, or leave max_length out to let "
            "stoke grow the capacity."
        )

    def __reduce__(self):
        return (PaddedLengthError, (self.index, self.path, self.length, self.capacity,
                                    self.fixed))


@dataclass(frozen=True)
class PaddedLayout:
    """The padding part of a :class:`BatchLayout`: the user's structure, which leaves are
    padded (``padded[i]``: position of leaf ``i``'s lengths leaf, or -1), and how the
    delivered batch is built (``outputs``: per output leaf, ("leaf", i), ("lengths", p) or
    ("mask", p), in the order of ``output_treedef``)."""

    treedef: TreeDef
    paths: tuple[str, ...]
    padded: tuple[int, ...]
    spec: PaddingSpec
    output_treedef: TreeDef
    outputs: tuple[tuple[str, int], ...]

    @property
    def user_leaves(self) -> int:
        return len(self.paths)

    def variable_output_paths(self) -> frozenset[str]:
        """Paths (as :func:`~stoke.data.structure.leaf_paths` names them) of the delivered
        leaves whose second axis changes from batch to batch."""
        names = leaf_paths(self.output_treedef)
        return frozenset(name for name, (kind, i) in zip(names, self.outputs)
                         if kind == "mask" or (kind == "leaf" and self.padded[i] >= 0))


def initial_capacity(length: int) -> int:
    return 1 << max(0, int(length) - 1).bit_length() if length > 0 else 1


def padded_layout(arrays: list[np.ndarray], treedef: TreeDef, rows: int, first_index: int,
                  spec: PaddingSpec, capacities: dict[int, int] | None = None) -> BatchLayout:
    """The ring layout for padded batches, from the first sample. ``capacities``: a
    capacity per padded leaf (after growth); else from ``spec`` and the first sample."""
    paths = tuple(leaf_paths(treedef))
    padded = []
    shapes = []
    count = 0
    for position, array in enumerate(arrays):
        if array.ndim == 0:
            padded.append(-1)
            shapes.append(())
            continue
        padded.append(count)
        if capacities and position in capacities:
            capacity = capacities[position]
        else:
            capacity = spec.capacity(array.shape[0])
        if spec.max_length is not None and array.shape[0] > spec.max_length:
            raise PaddedLengthError(first_index, paths[position], array.shape[0],
                                    spec.max_length, True)
        shapes.append((capacity, *array.shape[1:]))
        count += 1
    output_treedef, outputs = _output_tree(treedef, tuple(padded), spec.lengths, paths)
    info = PaddedLayout(treedef, paths, tuple(padded), spec, output_treedef, outputs)
    specs = []
    offset = 0
    for path, shape, array in zip(paths, shapes, arrays):
        leaf = LeafSpec(path, shape, array.dtype.str, offset)
        offset += _align(leaf.row_bytes * rows)
        specs.append(leaf)
    for p in range(count):
        leaf = LeafSpec(f"<length of padded leaf {p}>", (), np.dtype(np.int32).str, offset)
        offset += _align(leaf.row_bytes * rows)
        specs.append(leaf)
    ring_treedef = ("tuple", [treedef, ("tuple", [LEAF] * count)])
    return BatchLayout(ring_treedef, tuple(specs), rows, max(offset, 64), first_index,
                       padding=info)


def _align(nbytes: int, to: int = 64) -> int:
    return (nbytes + to - 1) // to * to


def _output_tree(treedef: TreeDef, padded: tuple[int, ...], mode: str | None,
                 paths: tuple[str, ...]) -> tuple[TreeDef, tuple[tuple[str, int], ...]]:
    """The delivered structure: the user's, plus a ``<key>_<mode>`` sibling per padded leaf
    when ``mode`` is set (each such leaf must sit in a dict)."""
    outputs: list[tuple[str, int]] = []
    counter = iter(range(len(padded)))

    def walk(node: TreeDef) -> TreeDef:
        kind = node[0]
        if kind == "leaf":
            outputs.append(("leaf", next(counter)))
            return node
        if kind == "dict":
            keys, children = [], []
            for key, child in zip(node[1], node[2]):
                keys.append(key)
                children.append(walk(child))
                if mode and child[0] == "leaf" and padded[outputs[-1][1]] >= 0:
                    sibling = f"{key}_{mode}"
                    if sibling in node[1]:
                        raise LayoutError(f"padded_batch(lengths={mode!r}) adds the key "
                                          f"{sibling!r}, but the sample already has it.")
                    keys.append(sibling)
                    children.append(LEAF)
                    outputs.append((mode, padded[outputs[-1][1]]))
            return ("dict", keys, children)
        return (kind, [walk(child) for child in node[1]])

    tree = walk(treedef)
    if mode:
        named = {i for kind, i in outputs if kind == "leaf"}
        lonely = [paths[i] for i in named if padded[i] >= 0 and
                  not any(k == mode and p == padded[i] for k, p in outputs)]
        if lonely:
            raise LayoutError(
                f"padded_batch(lengths={mode!r}) puts the {mode} next to each padded array, "
                f"in its dict; field(s) {', '.join(lonely)} are not in a dict. Return e.g. "
                "({'tokens': tokens}, label) from your map function."
            )
    return tree, tuple(outputs)


def fill_padded_slot(program: SampleProgram, task, layout: BatchLayout,
                     slot_views: list[np.ndarray]) -> tuple[int, list[str]]:
    """Write each kept sample of the chunk into the next row of a padded slot, then pad the
    rows up to the batch's longest sample."""
    info = layout.padding
    users = info.user_leaves
    leaves_plan = [(view, spec.shape, spec.shape[1:], p, spec.numpy_dtype, spec.path)
                   for view, spec, p in zip(slot_views, layout.leaves, info.padded)]
    dtypes = [spec.numpy_dtype for spec in layout.leaves[:users]]
    lengths: list[list[int]] = [[] for _ in range(len(slot_views) - users)]
    fixed = info.spec.max_length is not None
    row = 0
    cast_paths: set[str] = set()
    for index in task.indices.tolist():
        sample = program.run(index, task.epoch)
        if sample is FILTERED:
            continue
        treedef, leaves = flatten(sample)
        if treedef != info.treedef:
            raise structure_mismatch(index, treedef, layout.first_index, info.treedef)
        if all(type(leaf) is np.ndarray and leaf.dtype == dtype
               for leaf, dtype in zip(leaves, dtypes)):
            arrays, cast = leaves, ()  # already arrays of the layout's dtypes: no conversion
        else:
            arrays, cast = to_leaf_arrays(leaves, program.dtype_policy, index, treedef)
            for (_, _, _, _, dtype, path), array in zip(leaves_plan, arrays):
                if array.dtype != dtype and not np.can_cast(array.dtype, dtype, "same_kind"):
                    raise LayoutError(
                        f"sample {index}, field {path} has dtype {array.dtype}, but sample "
                        f"{layout.first_index} has {dtype}; cast in your map function.")
        for (view, shape, rest, p, _, path), array in zip(leaves_plan, arrays):
            if p < 0:
                if array.shape != shape:
                    raise LayoutError(
                        f"sample {index}, field {path} has shape {array.shape}, but "
                        f"sample {layout.first_index} has shape {shape}.")
                view[row] = array
                continue
            if array.ndim == 0 or array.shape[1:] != rest:
                raise LayoutError(
                    f"sample {index}, field {path} has shape {array.shape}; padded_batch "
                    f"pads the first axis only, and sample {layout.first_index} has "
                    f"(length, {', '.join(map(str, rest))}) there.")
            length = array.shape[0]
            if length > shape[0]:
                raise PaddedLengthError(index, path, length, shape[0], fixed)
            view[row, :length] = array
            lengths[p].append(length)
        cast_paths.update(cast)
        row += 1
    for position, p in enumerate(info.padded):
        if p < 0 or row == 0:
            continue
        written = slot_views[users + p][:row]
        written[:] = lengths[p]
        view = slot_views[position]
        width = info.spec.width(max(lengths[p]), view.shape[1])
        padding = np.arange(width)[None, :] >= written[:, None]
        if padding.any():  # one masked write per batch, only up to its delivered width
            view[:row, :width][padding] = info.spec.pad_value
    return row, sorted(cast_paths)


def deliver(layout: BatchLayout, leaves: list[np.ndarray]) -> Any:
    """The batch the user gets from a padded slot's ``leaves`` (rows already cut): padded
    arrays cut to the batch's longest, plus lengths or masks if asked. Views, no copy."""
    info = layout.padding
    lengths = leaves[info.user_leaves:]
    widths = [0] * len(lengths)
    for position, p in enumerate(info.padded):
        if p >= 0 and len(lengths[p]):
            widths[p] = info.spec.width(int(lengths[p].max()), leaves[position].shape[1])
    out = []
    for kind, i in info.outputs:
        if kind == "leaf":
            p = info.padded[i]
            out.append(leaves[i] if p < 0 else leaves[i][:, :widths[p]])
        elif kind == "lengths":
            out.append(lengths[i])
        else:
            out.append(np.arange(widths[i])[None, :] < lengths[i][:, None])
    return unflatten(info.output_treedef, out)


def grown_layout(layout: BatchLayout, error: PaddedLengthError) -> BatchLayout:
    """``layout`` after ``error``: the leaf that overflowed gets at least twice its old
    capacity (a power of two that holds the sample); everything else stays."""
    position = list(layout.padding.paths).index(error.path)
    old = layout.leaves[position].shape
    capacity = max(2 * old[0], layout.padding.spec.capacity(error.length))
    specs = []
    offset = 0
    for i, leaf in enumerate(layout.leaves):
        shape = (capacity, *old[1:]) if i == position else leaf.shape
        spec = LeafSpec(leaf.path, shape, leaf.dtype, offset)
        offset += _align(spec.row_bytes * layout.rows)
        specs.append(spec)
    return BatchLayout(layout.treedef, tuple(specs), layout.rows, max(offset, 64),
                       layout.first_index, padding=layout.padding)
