"""Model inputs made once: decoded, resized and laid out pictures kept on local disk, keyed by content.

Every evaluation of a dataset (the parent's, the child's, a re-run) feeds the model the same tensors:
`Preprocessing(decode_image(bytes))`. A `TensorCache` keeps each one under a key made of the sha256 of
the image bytes and every preprocessing parameter (the Preprocessing dataclass: size, resize type, channel
order, mean, scale, pad value) and a format version, so a different dataset, input size or preprocessing
never reads another's tensors, and the same picture under two names is made once. A hit returns exactly the
bytes the preprocessing produced (float32 [3, H, W], the Transform's four floats, the original size): the
numbers downstream are bit-identical to an uncached run. A miss runs the one preprocessing code path
(`workbench_runtime.preprocess.Preprocessing` on `services.common.images.decode_image_bytes`) and stores
the result.

Safe for several threads and processes sharing one directory: an entry is written to a temporary file in
the same directory and renamed into place (atomic on POSIX), so a reader sees a whole entry or none; an
entry that does not parse (a foreign or damaged file) is a miss and is rewritten. A size cap bounds the
directory: past it the least recently used entries (by modification time, refreshed on a hit) go, down
to 80 % of the cap. A reader that loses an entry to another process's eviction sees a miss.

Local disk rather than the object store: a hit must cost about a memory copy (an entry is 2 MB for a
416x416 input; an S3 round trip per image costs more than decoding the JPEG), and the entries are derived
data any worker can rebuild.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Union

import numpy as np

from services.common.images import decode_image_bytes
from services.common.object_store import ObjectStore
from services.common.settings import Settings
from workbench_runtime.errors import FailedPrecondition, InvalidArgument
from workbench_runtime.preprocess import Preprocessing, Transform

FORMAT = b"WBT2"  # WBT2: letterbox sizes floored as Darknet does (WBT1 entries are misses, not stale tensors)
_HEADER = struct.Struct("<4s3I4d2I")  # magic, tensor shape (C, H, W), transform, original (width, height)
DECODE_IMAGE = "decode_image"  # services.common.images.decode_image_bytes: the accuracy service's decode
Loaded = tuple[np.ndarray, Transform, tuple[int, int]]  # [3, H, W] float32, transform, (width, height)


def preprocessing_key(preprocessing: Preprocessing) -> str:
    """Every parameter that shapes the tensor, in a stable text form."""
    return repr((type(preprocessing).__name__, astuple(preprocessing)))


class TensorCache:
    def __init__(self, root: str | os.PathLike, max_bytes: int = Settings.tensor_cache_bytes):
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._bytes: int | None = None  # this process's running estimate of the directory's size
        self.hits = self.misses = 0

    # ------------------------------------------------------------------------------------------ keys

    def key(self, data: bytes, preprocessing: Preprocessing, decoder: str = DECODE_IMAGE) -> str:
        return self.key_of_digest(hashlib.sha256(data).hexdigest(), preprocessing, decoder)

    @staticmethod
    def key_of_digest(sha256: str, preprocessing: Preprocessing, decoder: str = DECODE_IMAGE) -> str:
        """The key of image bytes known only by their sha256 (hex), as a dataset manifest records it."""
        digest = hashlib.sha256(FORMAT)
        digest.update(preprocessing_key(preprocessing).encode())
        digest.update(b"\0" + decoder.encode() + b"\0")
        digest.update(bytes.fromhex(sha256))
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.t"

    # ------------------------------------------------------------------------------------------ entries

    def get(self, key: str) -> Loaded | None:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                head = f.read(_HEADER.size)
                if len(head) != _HEADER.size:
                    return None
                magic, c, h, w, sx, sy, px, py, width, height = _HEADER.unpack(head)
                if magic != FORMAT:
                    return None
                tensor = np.empty((c, h, w), np.float32)
                if f.readinto(memoryview(tensor).cast("B")) != tensor.nbytes or f.read(1):
                    return None
            try:
                os.utime(path)  # recently used: evicted last
            except OSError:
                pass
        except OSError:
            return None
        return tensor, Transform(sx, sy, px, py), (width, height)

    def put(self, key: str, value: Loaded) -> None:
        tensor, transform, (width, height) = value
        tensor = np.ascontiguousarray(tensor, np.float32)
        path = self._path(key)
        try:
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".t")
        except OSError:
            return  # a cache that cannot be written is no cache; the caller has its tensor
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_HEADER.pack(FORMAT, *tensor.shape, transform.scale_x, transform.scale_y,
                                     transform.pad_x, transform.pad_y, width, height))
                f.write(memoryview(tensor).cast("B"))
            os.replace(tmp, path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        self._grew(_HEADER.size + tensor.nbytes)

    def load(self, data: bytes, preprocessing: Preprocessing, *, name: str, field: str = "dataset",
             decode: Callable[[], np.ndarray] | None = None, decoder: str = DECODE_IMAGE) -> Loaded:
        """The model input of image bytes: from the cache, or decoded, preprocessed and stored.

        decode: another way to get the BGR pixels of these bytes, named by decoder (part of the key: pixels
        from another decoder may differ, e.g. where it applies EXIF orientation); default decode_image's."""
        key = self.key(data, preprocessing, decoder)
        found = self.get(key)
        if found is not None:
            with self._lock:
                self.hits += 1
            return found
        with self._lock:
            self.misses += 1
        if decode is None:
            made = preprocess_bytes(data, preprocessing, name=name, field=field)
        else:
            pixels = decode()
            tensor, transform = preprocessing(pixels)
            made = (tensor, transform, (pixels.shape[1], pixels.shape[0]))
        self.put(key, made)
        return made

    def load_stored(self, image: "StoredImage", preprocessing: Preprocessing, *, name: str,
                    field: str = "dataset") -> Loaded:
        """As load, for a stored image: a hit (by the manifest's sha256) does not fetch its bytes."""
        found = self.get(self.key_of_digest(image.sha256, preprocessing))
        if found is None:
            return self.load(image.read(), preprocessing, name=name, field=field)
        with self._lock:
            self.hits += 1
        return found

    # ------------------------------------------------------------------------------------------ size cap

    def _grew(self, nbytes: int) -> None:
        with self._lock:
            if self._bytes is None:
                self._bytes = self._scan()
            else:
                self._bytes += nbytes
            if self._bytes <= self.max_bytes:
                return
            self._bytes = self._evict(int(self.max_bytes * 0.8))

    def _entries(self) -> list[tuple[float, int, Path]]:
        entries = []
        for path in self.root.glob("*/*.t"):
            if path.name.startswith(".tmp-"):
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        return entries

    def _scan(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _evict(self, down_to: int) -> int:
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= down_to:
                break
            try:
                path.unlink()
            except OSError:
                pass
            total -= size
        return total


def preprocess_bytes(data: bytes, preprocessing: Preprocessing, *, name: str, field: str = "dataset") -> Loaded:
    """The one uncached path: decode (with decode_image's checks), then the model's preprocessing."""
    pixels = decode_image_bytes(data, name=name, field=field)[1]
    tensor, transform = preprocessing(pixels)
    return tensor, transform, (pixels.shape[1], pixels.shape[0])


def read_image_bytes(path: str | os.PathLike, *, name: str, field: str = "dataset") -> bytes:
    """A file's bytes, or InvalidArgument worded as decode_image words an unreadable file."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{name} cannot be read: {exc.strerror or exc}", field=field,
                              reason="IMAGE_UNREADABLE") from None


@dataclass(frozen=True)
class StoredImage:
    """A dataset image in the object store, known by the sha256 its manifest records: an evaluation whose cache
    holds its tensor never fetches it."""

    store: ObjectStore
    bucket: str
    key: str
    sha256: str

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]

    def read(self) -> bytes:
        data = self.store.get_bytes(self.bucket, self.key)
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise FailedPrecondition(f"stored image {self.name} no longer matches its dataset's manifest",
                                     field="dataset")
        return data


ImageSource = Union[str, os.PathLike, StoredImage]


def load_input(source: ImageSource, preprocessing: Preprocessing, cache: TensorCache | None, *, name: str,
               field: str = "dataset") -> Loaded:
    """The model input of an image file or stored image, through the cache when there is one."""
    if isinstance(source, StoredImage):
        if cache is not None:
            return cache.load_stored(source, preprocessing, name=name, field=field)
        data = source.read()
    else:
        data = read_image_bytes(source, name=name, field=field)
    if cache is None:
        return preprocess_bytes(data, preprocessing, name=name, field=field)
    return cache.load(data, preprocessing, name=name, field=field)


_default: TensorCache | None = None
_default_lock = threading.Lock()


def default_cache(env: dict | None = None) -> TensorCache | None:
    """The process's cache: WORKBENCH_TENSOR_CACHE_DIR (default: workbench-tensor-cache-<uid> in the temporary
    directory; "off" disables), capped at WORKBENCH_TENSOR_CACHE_BYTES (default 4 GiB). None when disabled
    or when the directory cannot be made."""
    global _default
    settings = Settings.from_env(env)  # WORKBENCH_TENSOR_CACHE_DIR, WORKBENCH_TENSOR_CACHE_BYTES
    where = settings.tensor_cache_dir
    if where.strip().lower() in ("off", "0", "none", "false", "no"):
        return None
    root = Path(where) if where else Path(tempfile.gettempdir()) / f"workbench-tensor-cache-{os.getuid()}"
    max_bytes = settings.tensor_cache_bytes
    with _default_lock:
        if _default is not None and _default.root == root and _default.max_bytes == max_bytes:
            return _default
        try:
            _default = TensorCache(root, max_bytes)
        except OSError:
            return None
        return _default
