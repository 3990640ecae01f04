"""``stoke.mix``: a deterministic weighted interleave of several pipelines' samples.

Owns the mixed source (:class:`MixSource`) and its plan (:class:`MixPlan`). Each mixed
pipeline keeps its own source, shuffle, seed, ``map``/``filter`` chain and epochs; the mix
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

from stoke.data.pipeline import Pipeline
from stoke.data.plan import PlanSpec
from stoke.data.program import FilterStep, SampleProgram, keep_unfiltered

_INDEX_BITS = 32
_SOURCE_BITS = 8
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_SOURCE_MASK = (1 << _SOURCE_BITS) - 1
_EPOCH_SHIFT = _INDEX_BITS + _SOURCE_BITS


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


def mix(pipelines: Sequence[Pipeline], weights: Sequence[float] | None = None, seed: int = 0,
        samples_per_epoch: int | None = None) -> Pipeline:
    """Interleave the samples of ``pipelines``, drawing from pipeline ``k`` a ``weights[k]``
    share of each epoch; deterministic by ``seed``; each pipeline's samples come exactly
    once per its own epoch; resumable with ``it.state()``. Mix unbatched pipelines, then
    batch (every pipeline must give samples of the same structure)::

        text = stoke.mix([web.map(tokenize), books.map(tokenize)], weights=[0.7, 0.3], seed=0)
        for batch in text.padded_batch(64).iter(): ...

    ``samples_per_epoch``: draws per epoch of the mix (default: the pipelines' lengths
    added). Weights need not add up to one (they are normalised).
    """
    pipelines = list(pipelines)
    if not pipelines:
        raise ValueError("mix needs at least one pipeline. Received: []")
    if len(pipelines) > _SOURCE_MASK + 1:
        raise ValueError(f"mix takes at most {_SOURCE_MASK + 1} pipelines. "
                         f"Received: {len(pipelines)}")
    weights = [1.0] * len(pipelines) if weights is None else [float(w) for w in weights]
    if len(weights) != len(pipelines) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            "mix needs one non-negative weight per pipeline, not all zero. Received: "
            f"{len(pipelines)} pipelines, weights={weights}"
        )
    for k, pipe in enumerate(pipelines):
        if not isinstance(pipe, Pipeline):
            raise TypeError(f"mix takes stoke pipelines. Received at {k}: {type(pipe).__name__}")
        if pipe.batch_size is not None or pipe.padding is not None or pipe.buckets is not None:
            raise ValueError(
                f"pipeline {k} is already batched; mix samples, then batch: "
                "stoke.data.mix([a, b], weights=...).batch(64)."
            )
        if isinstance(pipe.source, MixSource):
            raise ValueError(f"pipeline {k} is a mix itself; mix its pipelines in one "
                             "stoke.data.mix with the weights multiplied out.")
        if pipe.shard_count != 1 or pipe.repeat_count != 1:
            raise ValueError(f"pipeline {k}: shard or repeat the mix, not the pipelines in it.")
        if len(pipe.source) == 0:
            raise ValueError(f"pipeline {k} is empty: every mixed pipeline needs samples.")
        if len(pipe.source) > _INDEX_MASK:
            raise ValueError(f"pipeline {k} has more than 2**32 samples; mix supports fewer.")
    total = samples_per_epoch if samples_per_epoch is not None else sum(
        len(p.source) for p in pipelines)
    if not isinstance(total, int) or total < 1:
        raise ValueError(f"samples_per_epoch must be a positive int. Received: {total!r}")
    source = MixSource([p.program for p in pipelines], [p.plan_spec for p in pipelines],
                       weights, seed, total)
    has_filter = any(p.steps_have_filter() for p in pipelines)
    steps = (FilterStep(keep_unfiltered),) if has_filter else ()
    return Pipeline(source, steps=steps, seed=int(seed))
