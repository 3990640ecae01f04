"""Resume inside fit and padded batches under to_keras, on the backend the runner chose.

A real fit is preempted by an exception in a callback after Keras checkpointed mid-epoch;
a second fit (a new feed and a new model, as after a restart) with stoke.BackupAndRestore
goes on where the first stopped: every sample of the interrupted epoch trained on exactly
once across the restart. The samples trained on are seen by a layer that records its
input (run_eagerly, so it sees real values on every backend)."""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest

import stoke

N, BATCH = 48, 4  # 12 batches an epoch
SEEN: list[tuple[int, list]] = []  # (Keras epoch, what the model was trained on) per batch
EPOCH = [0]


class Recorder(keras.layers.Layer):
    """Records the first feature of each training batch (the sample id), then passes x."""

    def call(self, x, training=None):
        if training:
            try:
                values = np.asarray(keras.ops.convert_to_numpy(x))
            except Exception:  # noqa: BLE001 - symbolic tensors while the model is built
                return x
            SEEN.append((EPOCH[0], values[:, 0].tolist()))
        return x


class EpochMarker(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        EPOCH[0] = epoch


class Preempt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("preempted")


def pipeline():
    ids = np.arange(N, dtype=np.float32)[:, None]
    return stoke.from_arrays(ids, (ids[:, 0] % 2).astype("float32")).shuffle(0).batch(BATCH)


def model():
    m = keras.Sequential([keras.Input((1,)), Recorder(), keras.layers.Dense(1)])
    m.compile("sgd", "mse", run_eagerly=True)
    return m


def plan_ids(epoch):
    return [b[0][:, 0].tolist() for b in pipeline().iter(executor="inline", epoch=epoch,
                                                         copy=True)]


def by_epoch(seen):
    out: dict[int, list] = {}
    for epoch, ids in seen:
        out.setdefault(epoch, []).append(ids)
    return out


@pytest.mark.parametrize("save_freq", [1, 4])
def test_a_preempted_fit_resumes_its_input_mid_epoch_exactly_once(tmp_path, save_freq):
    backup = str(tmp_path / "backup")
    SEEN.clear()
    with pipeline().to_keras(workers=1, executor="process") as feed:
        first = model()
        with pytest.raises(RuntimeError, match="preempted"):
            first.fit(feed, epochs=3, verbose=0, callbacks=[
                EpochMarker(), stoke.BackupAndRestore(backup, feed, save_freq=save_freq),
                Preempt(epoch=1, batch=5)])
    run1 = by_epoch(SEEN)
    with open(tmp_path / "backup" / "stoke_input.json") as f:
        saved = json.load(f)
    checkpointed = 6 // save_freq * save_freq  # batches of epoch 1 in the checkpoint (4: not
    # the batch of the crash: batches 4 and 5 are trained again, from the checkpointed weights)
    assert (saved["epoch"], saved["batches_done"]) == (1, checkpointed)

    SEEN.clear()
    with pipeline().to_keras(workers=1, executor="process") as feed, \
            warnings.catch_warnings(record=True) as caught:  # the restarted job
        warnings.simplefilter("always")
        history = model().fit(feed, epochs=3, verbose=0, callbacks=[
            EpochMarker(), stoke.BackupAndRestore(backup, feed, save_freq=save_freq)])
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    run2 = by_epoch(SEEN)
    assert sorted(run2) == [1, 2] and len(history.history["loss"]) == 2

    assert run1[0] == plan_ids(0)
    epoch1 = plan_ids(1)
    assert run1[1] == epoch1[:6]  # trained before the crash (the last ones after the save)
    assert run2[1] == epoch1[checkpointed:]  # the rest of the epoch, not a replay
    trained = [i for ids in run1[1][:checkpointed] + run2[1] for i in ids]
    assert sorted(trained) == list(range(N))  # exactly once across the restart
    assert run2[2] == plan_ids(2)


def test_an_epoch_end_checkpoint_starts_the_next_epoch(tmp_path):
    backup = str(tmp_path / "backup")
    SEEN.clear()
    with pipeline().to_keras(workers=1, executor="thread") as feed:
        with pytest.raises(RuntimeError, match="preempted"):
            model().fit(feed, epochs=3, verbose=0, callbacks=[
                EpochMarker(), stoke.BackupAndRestore(backup, feed), Preempt(1, 2)])
    SEEN.clear()
    with pipeline().to_keras(workers=1, executor="thread") as feed:
        model().fit(feed, epochs=3, verbose=0, callbacks=[
            EpochMarker(), stoke.BackupAndRestore(backup, feed)])
    run2 = by_epoch(SEEN)
    assert run2[1] == plan_ids(1) and run2[2] == plan_ids(2)  # epoch 1 replayed whole


# -- padded batches under to_keras ---------------------------------------------------------
LENGTHS = [3, 7, 2, 12, 5, 9, 1, 16, 4, 8, 6, 10, 11, 2, 13, 3]


def sequence(i):
    n = LENGTHS[i]
    return np.full(n, i + 1, np.int32), np.float32(i % 2)


def test_padded_batches_train_on_every_backend():
    pipe = stoke.from_sequence(list(range(len(LENGTHS)))).map(sequence).padded_batch(4)
    expected = [x.shape[1] for x, _ in pipe.iter(executor="inline", copy=True)]
    assert len(set(expected)) > 1

    class Width(keras.layers.Layer):
        def call(self, x, training=None):
            if training:
                try:
                    SEEN.append((0, [np.asarray(keras.ops.convert_to_numpy(x)).shape[1]]))
                except Exception:  # noqa: BLE001 - symbolic while building
                    pass
            return x

    m = keras.Sequential([keras.Input((None,), dtype="int32"), Width(),
                          keras.layers.Embedding(len(LENGTHS) + 1, 4, mask_zero=True),
                          keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    m.compile("sgd", "mse", run_eagerly=True)
    SEEN.clear()
    with pipe.to_keras(workers=1, executor="process") as feed:
        history = m.fit(feed, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert [w[0] for _, w in SEEN] == expected  # each batch as long as its longest sample


def with_id(i):
    n = LENGTHS[i % len(LENGTHS)]
    return np.full(n, i + 1, np.int32), np.float32(i % 2)


def test_bucketed_cached_mixed_batches_train_exactly_once_per_epoch():
    first = stoke.from_sequence(list(range(16))).map(with_id).cache()
    second = stoke.from_sequence(list(range(100, 108))).map(with_id)
    pipe = stoke.mix([first, second], weights=[2, 1], seed=0, samples_per_epoch=24)
    per_epoch = [[int(row[0]) - 1 for row in x] for x, _ in
                 pipe.padded_batch(5).iter(executor="inline", copy=True)]

    class Ids(keras.layers.Layer):
        def call(self, x, training=None):
            if training:
                try:
                    SEEN.append((EPOCH[0], [int(r[0]) - 1 for r in
                                            np.asarray(keras.ops.convert_to_numpy(x))]))
                except Exception:  # noqa: BLE001 - symbolic while building
                    pass
            return x

    m = keras.Sequential([keras.Input((None,), dtype="int32"), Ids(),
                          keras.layers.Embedding(120, 4, mask_zero=True),
                          keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    m.compile("sgd", "mse", run_eagerly=True)
    SEEN.clear()
    with pipe.padded_batch(5).to_keras(workers=1, executor="process") as feed:
        m.fit(feed, epochs=2, verbose=0, callbacks=[EpochMarker()])
    seen = by_epoch(SEEN)
    assert seen[0] == per_epoch
    trained = [i for ids in seen[0] + seen[1] for i in ids]
    assert sorted(i for i in trained if i < 100) == sorted(list(range(16)) * 2)
    assert sorted(i for i in trained if i >= 100) == sorted(list(range(100, 108)) * 2)
    buckets = stoke.from_sequence(list(range(16))).map(with_id).bucket_by_length(
        lambda i: LENGTHS[i], [5, 10], [4, 3, 2])
    SEEN.clear()
    with buckets.to_keras(workers=1, executor="thread") as feed:
        m.fit(feed, epochs=1, verbose=0, callbacks=[EpochMarker()])
    assert sorted(i for ids in by_epoch(SEEN)[0] for i in ids) == list(range(16))
