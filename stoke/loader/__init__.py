"""The loader: the slot ring a pipeline's batches land in and the loops that fill it.

- :mod:`.scheduler`: :class:`~.scheduler.SlotScheduler`, slots, tasks in flight (typed
  :class:`~.scheduler.InFlight` records), waits, abandoned tasks, held batches, failure;
  every loop that reads the ring uses its public methods (also ``stoke.accelerate``);
- :mod:`.iterator`: :class:`~.iterator.BatchIterator`, epochs of a plan in plan order;
- :mod:`.rebatch`: full batches from the chunks of a filtered pipeline;
- :mod:`.loader`: :class:`~.loader.Loader` (workers and ring for a pipeline's life); which
  pool its options get is :mod:`stoke.executors.choose`'s.
"""
