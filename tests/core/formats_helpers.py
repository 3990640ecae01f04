"""What the format tests share: real writers (TensorFlow's, pyarrow's, array_record's,
tarfile), module-level map functions (process workers get them by reference), and a real
HTTP server on 127.0.0.1 with byte ranges and an injected per-request latency.

The benchmark ``benchmarks/formats_throughput.py`` uses the same server.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np

# -- map functions ------------------------------------------------------------------------


def example_id(record):
    """A TFRecord record (a tf.train.Example) -> its "id" feature."""
    import stoke

    return np.int64(stoke.parse_example(record)["id"][0])


def example_features(record):
    """A TFRecord record written by :func:`write_tfrecords_with_tf` -> (x, y) for a model:
    x = [id, id % 10, first float], y = id % 2."""
    import stoke

    example = stoke.parse_example(record)
    i = int(example["id"][0])
    return np.array([i, i % 10, example["x"][0]], np.float32), np.int64(i % 2)


def raw_id(record):
    """A record written by :func:`record_bytes` -> its id."""
    return np.int64(int(bytes(record).split(b":")[0]))


def raw_id_failing_at(record, bad: int):
    """:func:`raw_id`, raising ``ValueError`` on id ``bad`` (``functools.partial`` it)."""
    i = raw_id(record)
    if i == bad:
        raise ValueError(f"id {bad} is bad")
    return i


def sample_id(sample):
    """A WebDataset sample or a Parquet row -> its id."""
    if "__key__" in sample:
        return np.int64(int(sample["id"]))
    return np.int64(sample["id"])


def record_bytes(i: int, size: int = 40) -> bytes:
    head = f"{i}:".encode()
    return head + bytes((i * 7 + k) % 251 for k in range(size - len(head)))


# -- writers ------------------------------------------------------------------------------

TF_WRITER = r"""
import json, sys
import numpy as np
import tensorflow as tf
spec = json.loads(sys.argv[1])
for path, ids in spec:
    with tf.io.TFRecordWriter(path) as w:
        for i in ids:
            rng = np.random.default_rng(i)
            feature = {
                "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 10, -i])),
                "x": tf.train.Feature(float_list=tf.train.FloatList(
                    value=rng.standard_normal(i % 5 + 1).astype("float32").tolist())),
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[bytes(rng.integers(0, 256, 30 + i % 17, dtype=np.uint8)), b"tail"])),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            w.write(example.SerializeToString())
"""


def write_tfrecords_with_tf(folder: Path, sizes: list[int], stem: str = "train") -> list[str]:
    """TFRecord shards of tf.train.Examples written by TensorFlow's own writer, in a
    subprocess (the test process never imports TensorFlow). Ids run 0.. across shards."""
    spec, start = [], 0
    for shard, size in enumerate(sizes):
        path = str(folder / f"{stem}-{shard:03d}.tfrecord")
        spec.append((path, list(range(start, start + size))))
        start += size
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, "-c", TF_WRITER, json.dumps(spec)], check=True, env=env,
                   timeout=300)
    return [p for p, _ in spec]


def write_webdataset(folder: Path, sizes: list[int], stem: str = "shard") -> list[str]:
    """Tar shards with samples ``{key}.id``, ``{key}.bin``, ``{key}.json`` via tarfile."""
    paths, start = [], 0
    for shard, size in enumerate(sizes):
        path = folder / f"{stem}-{shard:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(start, start + size):
                for ext, data in (("id", str(i).encode()), ("bin", record_bytes(i, 50 + i % 30)),
                                  ("json", json.dumps({"i": i}).encode())):
                    info = tarfile.TarInfo(f"part/{i:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(str(path))
        start += size
    return paths


# -- an HTTP server with byte ranges and latency --------------------------------------------


class RangeServer:
    """Serves ``folder`` on 127.0.0.1 (HEAD, GET, ``Range: bytes=a-b``), each request
    delayed by ``latency_s``; counts requests. ``with RangeServer(folder) as url: ...``."""

    def __init__(self, folder: str | Path, latency_s: float = 0.0) -> None:
        self.folder = Path(folder)
        self.latency_s = latency_s
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0  # most requests served at the same time
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _file(self):
                path = server.folder / self.path.lstrip("/").split("?")[0]
                return path if path.is_file() else None

            def do_HEAD(self):  # noqa: N802 - http.server's naming
                self._answer(body=False)

            def do_GET(self):  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                with server._lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.latency_s:
                        time.sleep(server.latency_s)
                    self._send(body)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, body: bool) -> None:
                path = self._file()
                if path is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = path.stat().st_size
                start, end = 0, size
                ranged = self.headers.get("Range")
                if ranged and ranged.startswith("bytes="):
                    a, _, b = ranged[6:].partition("-")
                    start = int(a) if a else max(0, size - int(b))
                    end = min(size, int(b) + 1) if (a and b) else size
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if body:
                    with open(path, "rb") as f:
                        f.seek(start)
                        self.wfile.write(f.read(end - start))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class ServerProcess:
    """:class:`RangeServer` in a child process (``python -m tests.core.formats_helpers DIR
    LATENCY_MS``), so that serving does not take the measuring process's GIL; ``url`` once
    it listens. ``with ServerProcess(folder, 0.02) as url: ...``."""

    def __init__(self, folder: str | Path, latency_s: float = 0.0) -> None:
        self.args = [sys.executable, "-m", "tests.core.formats_helpers", str(folder),
                     str(latency_s * 1000)]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> str:
        repo = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True, env=env,
                                        cwd=repo)
        return self.process.stdout.readline().strip()

    def __exit__(self, *exc) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()


if __name__ == "__main__":
    with RangeServer(sys.argv[1], float(sys.argv[2]) / 1000) as url:
        print(url, flush=True)
        threading.Event().wait()
