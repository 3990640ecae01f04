"""The source and plan of ``stoke.mix``: a deterministic weighted interleave of several
pipelines' samples.

Owns the mixed source (:class:`MixSource`) and its plan (:class:`MixPlan`); the builder,
:func:`stoke.data.mix.mix`, checks the pipelines and makes them. Each mixed pipeline keeps its own source, shuffle, seed, ``map``/``filter`` chain and epochs; the mix
decides only which of them the next sample comes from.

How an epoch of the mix is made (a pure function of the seed and the epoch number, so any
executor and any worker count deliver the same order, and ``it.state()`` resumes it):

- an epoch of the mix has ``samples_per_epoch`` draws (default: the sources' lengths added);
- source ``k`` gets exactly ``round(weights[k] * samples_per_epoch)`` of them (largest
  remainders), in an order shuffled by ``(seed, epoch)``;
- source ``k``'s draws read its own sample stream: its epoch 0 permutation, then its epoch 1
  permutation, ... Mix epoch ``e`` continues that stream where epoch ``e - 1`` left it, so
  **each source delivers every one of its samples exactly once per its own epoch**, also
  when a small source is drawn more often than it has samples (it then starts its next,
  reshuffled epoch) or a large one less (its epoch goes on in the next mix epoch);
- the ``rng`` a mixed pipeline's ``map`` gets is that pipeline's own ``(seed, its epoch,
  index)``.

A mixed sample is addressed by one integer code: ``(source epoch << 40) | (k << 32) | i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stoke.data.plan import PlanSpec
from stoke.data.program import SampleProgram

_INDEX_BITS = 32
_SOURCE_BITS = 8
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_SOURCE_MASK = (1 << _SOURCE_BITS) - 1
_EPOCH_SHIFT = _INDEX_BITS + _SOURCE_BITS
MAX_SOURCES = _SOURCE_MASK + 1  # pipelines one mix can take
MAX_SOURCE_SAMPLES = _INDEX_MASK  # samples of one mixed pipeline, at most


class MixSource:
    """Sample ``code`` is sample ``i`` of pipeline ``k`` in that pipeline's epoch ``e``,
    after its own steps (or :data:`~stoke.data.program.FILTERED`)."""

    def __init__(self, programs: Sequence[SampleProgram], plans: Sequence[PlanSpec],
                 weights: Sequence[float], seed: int, samples_per_epoch: int) -> None:
        self.programs = tuple(programs)
        self.plans = tuple(plans)
        self.weights = tuple(float(w) for w in weights)
        self.seed = int(seed)
        self.samples_per_epoch = int(samples_per_epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, code: int) -> Any:
        code = int(code)
        epoch = code >> _EPOCH_SHIFT
        source = (code >> _INDEX_BITS) & _SOURCE_MASK
        return self.programs[source].run(code & _INDEX_MASK, epoch)

    def describe(self) -> str:
        weights = ", ".join(f"{w:g}" for w in self.weights)
        return f"mix of {len(self.programs)} pipelines (weights {weights}, seed {self.seed})"

    def plan(self, base: PlanSpec) -> MixPlan:
        """The mix's plan with ``base``'s batch size, drop, shuffle and shard."""
        return MixPlan(base.length, base.batch_size, base.drop_remainder, base.shuffle,
                       base.seed, base.shard_index, base.shard_count,
                       sources=self.plans, weights=self.weights, mix_seed=self.seed)


@dataclass(frozen=True)
class MixPlan(PlanSpec):
    """A :class:`~stoke.data.plan.PlanSpec` whose epoch order is the mix's codes."""

    sources: tuple[PlanSpec, ...] = ()
    weights: tuple[float, ...] = ()
    mix_seed: int = 0

    def counts(self) -> np.ndarray:
        """Draws per source in each mix epoch: exact shares, largest remainders first."""
        weights = np.asarray(self.weights, np.float64)
        exact = weights / weights.sum() * self.length
        counts = np.floor(exact).astype(np.int64)
        short = self.length - int(counts.sum())
        if short:
            order = np.argsort(-(exact - counts), kind="stable")
            counts[order[:short]] += 1
        return counts

    def order(self, epoch: int) -> np.ndarray:
        counts = self.counts()
        rng = np.random.default_rng([self.mix_seed, epoch, 0x313A])
        labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
        codes = np.empty(self.length, np.int64)
        for k, (plan, count) in enumerate(zip(self.sources, counts.tolist())):
            positions = epoch * count + np.arange(count, dtype=np.int64)
            source_epochs = positions // plan.length
            local = np.empty(count, np.int64)
            for source_epoch in np.unique(source_epochs).tolist():
                where = source_epochs == source_epoch
                local[where] = plan.order(source_epoch)[positions[where] % plan.length]
            codes[labels == k] = (source_epochs << _EPOCH_SHIFT) | (k << _INDEX_BITS) | local
        if self.shuffle:
            codes = codes[np.random.default_rng([self.seed, epoch, 0x5704E]).permutation(
                self.length)]
        if self.shard_count > 1:
            codes = codes[self.shard_index::self.shard_count]
        return codes

    def describe_extra(self) -> str:
        weights = ",".join(f"{w:g}" for w in self.weights)
        lengths = ",".join(str(p.length) for p in self.sources)
        return f",mix=({weights};{lengths};{self.mix_seed})"
