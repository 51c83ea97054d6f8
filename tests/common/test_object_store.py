"""ObjectStore against a real SeaweedFS (no mocks); the retry tests add a fault-injecting TCP proxy in front of it."""

from __future__ import annotations

import hashlib
import inspect
import io
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from minio.datatypes import Part

from workbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from services.common.object_store import (
    TMP_PREFIX,
    BucketNotFound,
    ChecksumMismatch,
    ObjectNotFound,
    ObjectRef,
    ObjectStore,
    StorageAuthError,
    StorageUnavailable,
    validate_key,
)
from services.common.seaweed import SeaweedServer, stop_pid

MiB = 1024 * 1024


class RandomStream:
    """`size` pseudo-random bytes produced on demand (never all in memory); hashes what it hands out."""

    def __init__(self, size: int, seed: int = 0, fail_after: int | None = None):
        self.remaining = size
        self.fail_after = fail_after
        self.sent = 0
        self.sha256 = hashlib.sha256()
        self._rng = random.Random(seed)

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise RuntimeError("client went away")
        n = min(self.remaining, 1 * MiB if n is None or n < 0 else min(n, 1 * MiB))  # small reads, like a socket
        data = self._rng.randbytes(n)
        self.remaining -= n
        self.sent += n
        self.sha256.update(data)
        return data


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_rss_growth(fn):
    """Run fn; return (result, growth of the peak RSS over the RSS before, in bytes)."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kib("VmRSS")
    result = fn()
    return result, (_status_kib("VmHWM") - before) * 1024


def staged_keys(store: ObjectStore, bucket: str) -> list[str]:
    return [o.object_name for o in store.client.list_objects(bucket, prefix=TMP_PREFIX, recursive=True)]


def incomplete_uploads(store: ObjectStore, bucket: str) -> list[str]:
    """Keys with a multipart upload begun and neither completed nor aborted (ListMultipartUploads)."""
    return [u.object_name for u in store.client._list_multipart_uploads(bucket).uploads]


def new_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


# -- round trips ------------------------------------------------------------------------------


def test_200mb_round_trip_streams_with_bounded_memory(store, bucket, tmp_path):
    size = 200 * MiB
    source = RandomStream(size, seed=7)
    started = time.perf_counter()
    ref, put_growth = peak_rss_growth(lambda: store.put_stream(bucket, "models/big.bin", source))  # length unknown
    put_s = time.perf_counter() - started
    expected = source.sha256.hexdigest()
    assert ref == ObjectRef(bucket, "models/big.bin", size, expected)
    assert store.stat(bucket, "models/big.bin") == ref
    assert staged_keys(store, bucket) == []  # the staging copy is gone

    target = tmp_path / "big.bin"
    started = time.perf_counter()
    got, get_growth = peak_rss_growth(lambda: store.get_file(bucket, "models/big.bin", target, expected_sha256=expected))
    get_s = time.perf_counter() - started
    assert got == ref and target.stat().st_size == size
    print(f"\n200 MiB put {size / MiB / put_s:.0f} MiB/s (peak RSS +{put_growth / MiB:.0f} MiB), "
          f"get {size / MiB / get_s:.0f} MiB/s (peak RSS +{get_growth / MiB:.0f} MiB)")
    assert put_growth < 80 * MiB  # (parallel_uploads + 1) parts of 8 MiB, plus slack
    assert get_growth < 32 * MiB


def test_small_values_bytes_json_files_and_ranges(store, bucket, tmp_path):
    ref = store.put_bytes(bucket, "a/b.txt", b"hello world", content_type="text/plain")
    assert ref == ObjectRef(bucket, "a/b.txt", 11, hashlib.sha256(b"hello world").hexdigest())
    assert store.get_bytes(bucket, "a/b.txt") == b"hello world"
    with store.get_stream(bucket, "a/b.txt", offset=6, length=3) as r:
        assert r.read() == b"wor" and r.ref.size == 11 and r.ref.sha256 == ref.sha256 and r.content_type == "text/plain"
    with pytest.raises(ResourceExhausted):
        store.get_bytes(bucket, "a/b.txt", max_bytes=5)

    doc = {"id": "p1", "name": "Projekt ü", "tags": ["x"], "n": 3}
    store.put_json(bucket, "projects/p1.json", doc)
    assert store.get_json(bucket, "projects/p1.json") == doc
    with pytest.raises(FailedPrecondition):
        store.get_json(bucket, "a/b.txt")

    assert store.put_bytes(bucket, "empty", b"").size == 0 and store.get_bytes(bucket, "empty") == b""

    local = tmp_path / "f.bin"
    local.write_bytes(random.Random(1).randbytes(9 * MiB + 3))  # two parts
    ref = store.put_file(bucket, "uploads/模型 v1.onnx", local)
    assert ref.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    assert store.stat(bucket, "uploads/模型 v1.onnx").sha256 == ref.sha256
    with store.get_stream(bucket, "uploads/模型 v1.onnx") as r:
        assert hashlib.sha256(b"".join(r)).hexdigest() == ref.sha256


def test_declared_sha256_is_checked_before_publishing(store, bucket):
    data = random.Random(2).randbytes(12 * MiB)
    good = hashlib.sha256(data).hexdigest()
    with pytest.raises(ChecksumMismatch):
        store.put_stream(bucket, "m.bin", io.BytesIO(data), len(data), sha256="0" * 64)
    assert not store.exists(bucket, "m.bin")
    assert store.put_stream(bucket, "m.bin", io.BytesIO(data), sha256=good).sha256 == good
    with pytest.raises(InvalidArgument) as err:  # shorter than declared
        store.put_stream(bucket, "short.bin", io.BytesIO(data), len(data) + 1)
    assert err.value.field == "length" and not store.exists(bucket, "short.bin")


@pytest.mark.parametrize("declared_sha", [False, True], ids=["staged", "direct"])
@pytest.mark.parametrize("fail_after", [1 * MiB, 20 * MiB], ids=["single-put", "multipart"])
def test_interrupted_put_leaves_nothing_visible(store, bucket, declared_sha, fail_after):
    stream = RandomStream(64 * MiB, fail_after=fail_after)
    with pytest.raises(RuntimeError, match="client went away"):  # the stream's own error, unchanged
        store.put_stream(bucket, "job/out.bin", stream, sha256="a" * 64 if declared_sha else None)
    assert not store.exists(bucket, "job/out.bin")
    assert store.list(bucket) == [] and staged_keys(store, bucket) == [] and incomplete_uploads(store, bucket) == []


# -- multipart uploads on the SDK's private part-level calls ----------------------------------------


def test_the_private_minio_calls_relied_on_keep_their_signatures():
    """object_store.py uploads multipart objects through minio's private part-level calls, not the public
    put_object, because put_object's multipart loop cannot keep three of its guarantees (the module
    docstring says which; the two tests below hold them): it aborts while parts are still in flight, it
    reads the whole stream before a failed part surfaces, and it leaves its worker threads behind when
    the stream fails. Private calls may change in any minio release without notice, so their exact
    signatures are pinned here, parameter by parameter in the order object_store.py passes them
    positionally, and the Part record it builds: an upgrade that changes one fails here, by name, rather
    than as a broken upload."""
    relied_on = {  # name: (parameters after self, return annotation)
        "_create_multipart_upload": (["bucket_name", "object_name", "headers"], "str"),  # the upload id
        "_upload_part": (["bucket_name", "object_name", "data", "headers", "upload_id", "part_number"], "str"),  # etag
        "_complete_multipart_upload": (["bucket_name", "object_name", "upload_id", "parts", "ssec"],
                                       "CompleteMultipartUploadResult"),
        "_abort_multipart_upload": (["bucket_name", "object_name", "upload_id"], inspect.Signature.empty),
    }
    for name, (parameters, returns) in relied_on.items():
        signature = inspect.signature(getattr(Minio, name))
        assert list(signature.parameters)[1:] == parameters, f"minio.Minio.{name}{signature}"
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in signature.parameters.values()), name
        assert signature.return_annotation == returns, f"minio.Minio.{name}{signature}"  # minio's are strings
    assert inspect.signature(Minio._complete_multipart_upload).parameters["ssec"].default is None
    part = Part(3, "etag")
    assert (part.part_number, part.etag) == (3, "etag")


def test_a_failed_multipart_upload_is_aborted_after_its_parts_and_leaves_no_thread(store, bucket, monkeypatch):
    """The stream fails while two slow parts are in flight: the abort waits for them (a part that lands
    after an abort can leave storage behind), and every part thread has ended when the error surfaces."""
    upload_part, abort = store.client._upload_part, store.client._abort_multipart_upload
    in_flight, at_abort = [0], []
    lock = threading.Lock()

    def slow_part(*args):
        with lock:
            in_flight[0] += 1
        try:
            time.sleep(0.3)
            return upload_part(*args)
        finally:
            with lock:
                in_flight[0] -= 1

    def recorded_abort(*args):
        at_abort.append(in_flight[0])
        return abort(*args)

    monkeypatch.setattr(store.client, "_upload_part", slow_part)
    monkeypatch.setattr(store.client, "_abort_multipart_upload", recorded_abort)
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="client went away"):
        store.put_stream(bucket, "job/out.bin", RandomStream(64 * MiB, fail_after=20 * MiB), sha256="a" * 64)
    assert at_abort == [0]
    assert new_threads(before) == []
    assert incomplete_uploads(store, bucket) == [] and not store.exists(bucket, "job/out.bin")


def test_a_failed_part_stops_the_upload_without_reading_the_rest(store, bucket, monkeypatch):
    """Every part fails (the connection drops): the upload fails within a few parts of the stream, not
    after reading all of it, aborted, with no thread left."""
    def lost(*args):
        raise urllib3.exceptions.ProtocolError("Connection aborted.")

    monkeypatch.setattr(store.client, "_upload_part", lost)
    stream = RandomStream(400 * MiB)
    before = set(threading.enumerate())
    with pytest.raises(StorageUnavailable, match="connection lost"):
        store.put_stream(bucket, "big.bin", stream)
    assert stream.sent <= (store.parallel_uploads + 1) * store.part_size
    assert new_threads(before) == []
    assert incomplete_uploads(store, bucket) == [] and store.list(bucket) == [] and staged_keys(store, bucket) == []


# -- errors -----------------------------------------------------------------------------------


def test_wrong_credentials_are_a_clear_auth_error(seaweed, bucket):
    for access, secret, code in [(seaweed.access_key, "wrong-secret-123", "SignatureDoesNotMatch"),
                                 ("nobody", seaweed.secret_key, "InvalidAccessKeyId")]:
        bad = ObjectStore(seaweed.endpoint, access, secret)
        with pytest.raises(StorageAuthError) as err:
            bad.put_bytes(bucket, "x", b"x")
        assert isinstance(err.value, Unavailable)
        assert err.value.message == f"object store at {seaweed.endpoint} rejected the credentials ({code})"
        with pytest.raises(StorageAuthError):  # HEAD has no error body: still an auth error
            bad.stat(bucket, "x")
        assert secret not in str(err.value) and seaweed.secret_key not in str(err.value)


def test_unreachable_endpoint_fails_fast_and_names_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{s.getsockname()[1]}"  # nobody listens once closed
    store = ObjectStore(endpoint, "k", "s")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as err:
        store.stat("some-bucket", "k")
    assert time.monotonic() - started < 3  # a few quick retries, then give up
    assert err.value.message == f"object store at {endpoint} is unreachable (connection refused)"
    with pytest.raises(StorageUnavailable):
        store.put_stream("some-bucket", "k", RandomStream(10))


def test_missing_bucket_and_missing_object(store, bucket, tmp_path):
    for call in (lambda: store.stat("no-such-bucket", "k"), lambda: store.get_bytes("no-such-bucket", "k"),
                 lambda: store.put_bytes("no-such-bucket", "k", b"x"), lambda: store.list("no-such-bucket"),
                 lambda: store.exists("no-such-bucket", "k")):
        with pytest.raises(BucketNotFound) as err:
            call()
        assert isinstance(err.value, FailedPrecondition) and "no-such-bucket" in err.value.message
    for call in (lambda: store.stat(bucket, "nope"), lambda: store.get_bytes(bucket, "nope"),
                 lambda: store.get_file(bucket, "nope", tmp_path / "out")):
        with pytest.raises(ObjectNotFound) as err:
            call()
        assert isinstance(err.value, NotFound) and "nope" in err.value.message
    assert not store.exists(bucket, "nope")
    store.delete(bucket, "nope")  # idempotent, like S3
    assert list(tmp_path.iterdir()) == []


def test_get_file_verifies_sha256_and_removes_the_partial_file(store, bucket, tmp_path):
    data = random.Random(3).randbytes(3 * MiB)
    store.put_bytes(bucket, "m.bin", data)
    with pytest.raises(ChecksumMismatch) as err:
        store.get_file(bucket, "m.bin", tmp_path / "m.bin", expected_sha256="f" * 64)
    assert "expected sha256" in err.value.message
    assert list(tmp_path.iterdir()) == []
    # an object whose stored hash does not match its content (written behind our back) is caught too
    store.client.put_object(bucket, "bad.bin", io.BytesIO(data), len(data), metadata={"sha256": "e" * 64})
    with pytest.raises(ChecksumMismatch, match="stored sha256"):
        store.get_file(bucket, "bad.bin", tmp_path / "bad.bin")
    assert list(tmp_path.iterdir()) == []
    assert store.get_file(bucket, "m.bin", tmp_path / "m.bin").sha256 == hashlib.sha256(data).hexdigest()


def test_get_files_fetch_in_the_order_given_and_check_each_hash(store, bucket, tmp_path):
    datas = [random.Random(n).randbytes(1000 + n) for n in range(9)]
    refs = [store.put_bytes(bucket, f"many/{n}", data) for n, data in enumerate(datas)]
    paths = [tmp_path / f"{n}.bin" for n in range(len(refs))]
    assert list(store.get_files(list(zip(refs, paths)), at_once=3)) == paths
    assert [path.read_bytes() for path in paths] == datas
    wrong = ObjectRef(bucket, "many/4", refs[4].size, "f" * 64)
    fetched = store.get_files([(refs[0], tmp_path / "a"), (wrong, tmp_path / "b"), (refs[5], tmp_path / "c")])
    assert next(fetched) == tmp_path / "a"
    with pytest.raises(ChecksumMismatch, match="many/4"):
        next(fetched)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".*part"))


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a/./b", "a//b", "dir/", "a\\b", "a\x00b", "a\nb",
                                 "x" * 1025, "s/" + "y" * 256, TMP_PREFIX + "x"])
def test_key_validation_rejects_traversal_and_junk(store, bucket, key):
    with pytest.raises(InvalidArgument) as err:
        validate_key(key)
    assert err.value.field == "key"
    with pytest.raises(InvalidArgument):
        store.put_bytes(bucket, key, b"x")


# -- listing, deleting, presigning ------------------------------------------------------------------


def test_list_pagination_with_start_after_and_limit(store, bucket):
    keys = [f"p/{i:02d}.json" for i in range(7)]
    for k in keys:
        store.put_json(bucket, k, {"k": k})
    store.put_bytes(bucket, "q/other", b"1")
    store.client.put_object(bucket, TMP_PREFIX + "stale", io.BytesIO(b"z"), 1)  # a leftover staged upload

    pages, after = [], None
    while True:
        page = store.list(bucket, "p/", start_after=after, limit=3)
        if not page:
            break
        pages.append([r.key for r in page])
        after = page[-1].key
    assert pages == [keys[0:3], keys[3:6], keys[6:7]]
    assert [r.key for r in store.iter_objects(bucket, "p/", start_after=keys[4])] == keys[5:]
    everything = store.list(bucket)
    assert [r.key for r in everything] == keys + ["q/other"]  # staged uploads stay hidden
    assert everything[0].size == len('{"k":"p/00.json"}') and everything[0].sha256 == ""  # listings carry no hash
    assert store.purge_staged(bucket, older_than=timedelta(0)) == 1 and staged_keys(store, bucket) == []


def test_delete_and_delete_prefix(store, bucket):
    for k in ["jobs/1/a", "jobs/1/b/c", "jobs/10/a", "keep"]:
        store.put_bytes(bucket, k, b"x")
    assert store.delete_prefix(bucket, "jobs/1/") == 2
    assert [r.key for r in store.list(bucket)] == ["jobs/10/a", "keep"]
    store.delete(bucket, "keep")
    assert not store.exists(bucket, "keep")
    with pytest.raises(InvalidArgument):
        store.delete_prefix(bucket, "")


def test_presigned_put_then_get_over_plain_http(store, bucket):
    put_url = store.presigned_put(bucket, "uploads/u1", expires=timedelta(minutes=5))
    body = b"uploaded by a browser"
    urllib.request.urlopen(urllib.request.Request(put_url, data=body, method="PUT"), timeout=10).close()
    assert store.stat(bucket, "uploads/u1") == ObjectRef(bucket, "uploads/u1", len(body), "")  # no stored hash
    with urllib.request.urlopen(store.presigned_get(bucket, "uploads/u1", timedelta(minutes=5)), timeout=10) as r:
        assert r.read() == body


def test_presigned_url_expiry_is_enforced(store, bucket):
    store.put_bytes(bucket, "k", b"secret")
    url = store.presigned_get(bucket, "k", expires=timedelta(seconds=1))
    time.sleep(2.2)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=10)
    assert err.value.code == 403  # SeaweedFS answers AccessDenied "Request has expired"
    with pytest.raises(InvalidArgument):
        store.presigned_get(bucket, "k", expires=timedelta(days=8))


# -- retries ------------------------------------------------------------------------------------


class FlakyProxy:
    """TCP proxy in front of SeaweedFS that answers the first `failures` connections with 503 SlowDown."""

    BODY = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    def __init__(self, target: str, failures: int):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.failures = failures
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self.connections <= self.failures:
                threading.Thread(target=self._refuse, args=(conn,), daemon=True).start()
            else:
                upstream = socket.create_connection(self.target)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _refuse(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(self.BODY), self.BODY))

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def test_transient_errors_are_retried_with_backoff_but_bounded(seaweed, store, bucket):
    store.put_bytes(bucket, "k", b"v")
    proxy = FlakyProxy(seaweed.endpoint, failures=2)
    try:
        flaky = ObjectStore(proxy.endpoint, seaweed.access_key, seaweed.secret_key, retries=3, backoff=0.05)
        assert flaky.get_bytes(bucket, "k") == b"v"  # two SlowDowns, then through
        assert proxy.connections == 3
    finally:
        proxy.close()

    proxy = FlakyProxy(seaweed.endpoint, failures=100)
    try:
        flaky = ObjectStore(proxy.endpoint, seaweed.access_key, seaweed.secret_key, retries=3, backoff=0.05)
        with pytest.raises(StorageUnavailable, match=r"is failing \(SlowDown\)"):
            flaky.get_bytes(bucket, "k")
        assert proxy.connections == 4  # the first try and three retries
        with pytest.raises(StorageUnavailable, match=r"is failing \(HTTP 503\)"):  # HEAD: no error body
            flaky.stat(bucket, "k")
        assert proxy.connections == 8
    finally:
        proxy.close()


def test_auth_and_not_found_errors_are_not_retried(seaweed, bucket):
    proxy = FlakyProxy(seaweed.endpoint, failures=0)
    try:
        bad = ObjectStore(proxy.endpoint, seaweed.access_key, "wrong-secret", retries=3, backoff=0.05)
        with pytest.raises(StorageAuthError):
            bad.get_bytes(bucket, "k")
        good = ObjectStore(proxy.endpoint, seaweed.access_key, seaweed.secret_key, retries=3, backoff=0.05)
        with pytest.raises(ObjectNotFound):
            good.get_bytes(bucket, "missing")
        assert proxy.connections == 2  # one request each (keep-alive aside, no retry opened another)
    finally:
        proxy.close()


# -- the server itself ----------------------------------------------------------------------------


def test_data_survives_a_seaweedfs_restart_on_the_same_state_dir(tmp_path):
    state = tmp_path / "sw"
    first = SeaweedServer.start(state, 0, "restart-key", "restart-secret", detached=True)
    try:
        assert SeaweedServer.attach(state).pid == first.pid  # what `workbench-dev down` finds later
        store = ObjectStore(first.endpoint, "restart-key", "restart-secret")
        store.ensure_bucket("persist")
        ref = store.put_bytes("persist", "projects/p1.json", b'{"id":"p1"}')
        store.close()
    finally:
        assert stop_pid(state / "seaweed.pid", timeout=1)
    assert SeaweedServer.attach(state) is None and not (state / "seaweed.pid").exists()

    second = SeaweedServer.start(state, 0, "restart-key", "restart-secret")
    try:
        assert second.endpoint == first.endpoint  # ports are reused when still free
        store = ObjectStore(second.endpoint, "restart-key", "restart-secret")
        assert store.stat("persist", "projects/p1.json") == ref
        assert store.get_bytes("persist", "projects/p1.json") == b'{"id":"p1"}'
        store.close()
    finally:
        second.stop(timeout=1)
    assert not second.is_running()
