"""The tensor cache: hits are bit-identical to the preprocessing, keys separate content and settings, entries
are written atomically, damaged entries are misses, the size cap evicts the least recently used."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.common import tensor_cache
from services.common.images import decode_image
from services.common.tensor_cache import TensorCache, default_cache, load_input, preprocess_bytes
from workbench_runtime.errors import InvalidArgument
from workbench_runtime.preprocess import Preprocessing

REPO = Path(__file__).resolve().parents[2]
PHOTOS = sorted((REPO / "data" / "images").glob("*.jpg"))
SETTINGS = [
    Preprocessing(416, 416),
    Preprocessing(320, 256, resize_type="fit_to_window_letterbox", pad_value=114),
    Preprocessing(224, 224, resize_type="fit_to_window", reverse_input_channels=True,
                  mean=(123.675, 116.28, 103.53), scale=(58.395, 57.12, 57.375)),
]


def same(a, b) -> None:
    tensor_a, transform_a, size_a = a
    tensor_b, transform_b, size_b = b
    assert tensor_a.dtype == tensor_b.dtype == np.float32 and tensor_a.shape == tensor_b.shape
    assert tensor_a.tobytes() == tensor_b.tobytes()
    assert transform_a == transform_b and size_a == size_b


@pytest.mark.parametrize("preprocessing", SETTINGS)
def test_a_hit_is_bit_identical_to_the_preprocessing(tmp_path, preprocessing):
    cache = TensorCache(tmp_path)
    for path in PHOTOS:
        pixels = decode_image(path)
        tensor, transform = preprocessing(pixels)
        expected = (tensor, transform, (pixels.shape[1], pixels.shape[0]))
        same(load_input(path, preprocessing, None, name=path.name), expected)
        same(load_input(path, preprocessing, cache, name=path.name), expected)  # miss: made and stored
        same(load_input(path, preprocessing, cache, name=path.name), expected)  # hit: read back
    assert (cache.misses, cache.hits) == (len(PHOTOS), len(PHOTOS))


def test_keys_separate_content_and_every_preprocessing_parameter(tmp_path):
    cache = TensorCache(tmp_path)
    data = PHOTOS[0].read_bytes()
    base = SETTINGS[0]
    variants = [base, replace(base, width=418), replace(base, resize_type="fit_to_window"),
                replace(base, reverse_input_channels=True), replace(base, mean=(1.0, 0.0, 0.0)),
                replace(base, scale=(255.0, 255.0, 255.0)), replace(base, pad_value=1)]
    keys = {cache.key(data, p) for p in variants} | {cache.key(PHOTOS[1].read_bytes(), base)}
    assert len(keys) == len(variants) + 1
    assert cache.key(data, base) == TensorCache(tmp_path / "other").key(bytes(data), Preprocessing(416, 416))


def test_a_damaged_entry_is_a_miss_and_is_rewritten(tmp_path):
    cache = TensorCache(tmp_path)
    data, preprocessing = PHOTOS[0].read_bytes(), SETTINGS[0]
    expected = preprocess_bytes(data, preprocessing, name="x")
    key = cache.key(data, preprocessing)
    cache.load(data, preprocessing, name="x")
    path = cache._path(key)
    for damage in (path.read_bytes()[:1000], b"", b"JUNK" + path.read_bytes()[4:], path.read_bytes() + b"x"):
        path.write_bytes(damage)
        assert cache.get(key) is None
        same(cache.load(data, preprocessing, name="x"), expected)
        same(cache.get(key), expected)


def test_image_errors_are_the_same_with_and_without_the_cache(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(PHOTOS[0].read_bytes()[:200])
    for cache in (None, TensorCache(tmp_path / "c")):
        for path, words in ((broken, "broken.jpg is not a JPEG"), (tmp_path / "gone.jpg", "cannot be read")):
            with pytest.raises(InvalidArgument, match=words) as error:
                load_input(path, SETTINGS[0], cache, name=path.name)
            assert error.value.field == "dataset"
    assert not list((tmp_path / "c").glob("*/*"))  # nothing stored for a failed image


def test_the_size_cap_evicts_the_least_recently_used(tmp_path):
    preprocessing = Preprocessing(64, 64)
    entry = 64 * 64 * 3 * 4 + tensor_cache._HEADER.size
    cache = TensorCache(tmp_path, max_bytes=3 * entry)
    datas = [p.read_bytes() for p in PHOTOS[:5]]
    for data in datas[:3]:
        cache.load(data, preprocessing, name="x")
    import os
    import time
    old = time.time() - 100
    for n, data in enumerate(datas[:3]):  # the first is used last: the second goes first
        os.utime(cache._path(cache.key(data, preprocessing)), (old + n, old + n))
    cache.load(datas[0], preprocessing, name="x")  # a hit refreshes it
    cache.load(datas[3], preprocessing, name="x")  # over the cap: down to 80 % of it
    left = {key.stem for key in tmp_path.glob("*/*.t")}
    assert cache.key(datas[1], preprocessing) not in left and cache.key(datas[2], preprocessing) not in left
    assert {cache.key(datas[0], preprocessing), cache.key(datas[3], preprocessing)} == left


def test_threads_sharing_one_directory_see_whole_entries(tmp_path):
    preprocessing = SETTINGS[1]
    datas = [p.read_bytes() for p in PHOTOS]
    expected = [preprocess_bytes(d, preprocessing, name="x") for d in datas]
    caches = [TensorCache(tmp_path) for _ in range(4)]  # as separate processes would
    failures = []

    def work(cache):
        try:
            for _ in range(3):
                for data, want in zip(datas, expected):
                    same(cache.load(data, preprocessing, name="x"), want)
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in caches for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert not list(tmp_path.glob("*/.tmp-*"))
    assert len(list(tmp_path.glob("*/*.t"))) == len(PHOTOS)


def test_default_cache_from_the_environment(tmp_path):
    assert default_cache({"WORKBENCH_TENSOR_CACHE_DIR": "off"}) is None
    cache = default_cache({"WORKBENCH_TENSOR_CACHE_DIR": str(tmp_path), "WORKBENCH_TENSOR_CACHE_BYTES": "1000"})
    assert cache.root == tmp_path and cache.max_bytes == 1000
    assert default_cache({"WORKBENCH_TENSOR_CACHE_DIR": str(tmp_path), "WORKBENCH_TENSOR_CACHE_BYTES": "1000"}) is cache
    with pytest.raises(InvalidArgument):
        default_cache({"WORKBENCH_TENSOR_CACHE_BYTES": "lots"})


def test_a_stored_image_is_fetched_only_on_a_miss_and_checked_against_its_manifest_hash(tmp_path, store, bucket):
    import hashlib

    from services.common.tensor_cache import StoredImage
    from workbench_runtime.errors import FailedPrecondition

    preprocessing, cache = SETTINGS[0], TensorCache(tmp_path)
    sources = []
    for path in PHOTOS:
        data = path.read_bytes()
        store.put_bytes(bucket, f"ds/images/{path.name}", data)
        sources.append(StoredImage(store, bucket, f"ds/images/{path.name}", hashlib.sha256(data).hexdigest()))
    for source, path in zip(sources, PHOTOS):  # misses: fetched, made and stored
        same(load_input(source, preprocessing, cache, name=path.name),
             load_input(path, preprocessing, None, name=path.name))
    for source in sources:
        store.delete(bucket, source.key)  # a hit must not need the object at all
    for source, path in zip(sources, PHOTOS):
        same(load_input(source, preprocessing, cache, name=path.name),
             load_input(path, preprocessing, None, name=path.name))
    assert (cache.misses, cache.hits) == (len(PHOTOS), len(PHOTOS))

    store.put_bytes(bucket, sources[0].key, PHOTOS[1].read_bytes())  # replaced behind the manifest's back
    for other in (None, TensorCache(tmp_path / "empty")):
        with pytest.raises(FailedPrecondition, match=f"{PHOTOS[0].name} no longer matches"):
            load_input(sources[0], preprocessing, other, name=PHOTOS[0].name)
