"""Importing a 1,000-image COCO zip (768x576 JPEGs made from the vtest frames) with normalize_dataset.

Three sides, alternating in each round, medians quoted:
  decode   the pure decoding of the same 1,000 JPEGs from memory with decode_image_bytes, serially and
           on as many threads as the import decodes with;
  nostore  normalize_dataset with a store_image that does nothing (extraction, reading, validation);
  upload   the same 1,000 files put to SeaweedFS on 4 threads, nothing else;
  s3       normalize_dataset with a store_image that uploads each image to a real SeaweedFS through
           ObjectStore.put_file on a pool of 4 threads, as the accuracy servicer does, waiting for the
           last upload.
import_over_decode = s3 / decode shows whether the import is bound by decoding or by storage round trips.
Peak memory is this process's VmHWM during the s3 imports (SeaweedFS runs in its own process).

    .venv/bin/python bench/dataset_import.py [--images 1000] [--rounds 3] [--tuned-malloc]

--tuned-malloc calls services.common.images.tune_allocator_for_images() first (glibc reuses freed pixel
buffers instead of faulting in fresh pages for each decode); run it with and without to compare.
CPU seconds are reported for this process and for the SeaweedFS server (one `weed` process), since on
a small machine the store's server competes with the import for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REPO, cpu_s, emit, median, peak_rss_mb, reset_peak_rss, seaweed  # noqa: E402
from services.accuracy.dataset_import import DatasetLimits, normalize_dataset  # noqa: E402
from services.common.images import decode_image_bytes, tune_allocator_for_images  # noqa: E402
from services.common.object_store import ObjectStore  # noqa: E402

UPLOAD_THREADS = 4  # as services.accuracy.publish


def make_dataset(count: int, folder: Path) -> tuple[Path, list[bytes]]:
    """A COCO zip of `count` re-encoded vtest frames (brightness, flips, quality varied), 1-6 boxes each."""
    frames = [cv2.imread(str(p)) for p in sorted((REPO / "data" / "vtest").glob("*.jpg"))]
    rng = random.Random(4)
    blobs, images, annotations = [], [], []
    for i in range(count):
        cycle = i // len(frames)
        frame = frames[i % len(frames)]
        frame = cv2.convertScaleAbs(frame, alpha=1.0 + 0.02 * (cycle % 5), beta=cycle * 3 - 18)
        if cycle % 2:
            frame = cv2.flip(frame, 1)
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85 + cycle % 10])
        blobs.append(jpeg.tobytes())
        h, w = frame.shape[:2]
        images.append({"id": i + 1, "file_name": f"frame_{i:05d}.jpg", "width": w, "height": h})
        for _ in range(rng.randint(1, 6)):
            bw, bh = rng.uniform(30, 90), rng.uniform(80, 220)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                                "area": round(bw * bh, 2), "iscrowd": 0})
    archive = folder / "coco1000.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("annotations/instances_val.json", json.dumps(
            {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}))
        for image, blob in zip(images, blobs):
            zf.writestr(f"images/{image['file_name']}", blob)
    return archive, blobs


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def decode_all(blobs: list[bytes], threads: int) -> float:
    start = time.perf_counter()
    if threads == 1:
        for k, blob in enumerate(blobs):
            decode_image_bytes(blob, name=str(k))
    else:
        with ThreadPoolExecutor(threads) as pool:
            # keep no pixels: only the time counts
            for _ in pool.map(lambda kb: decode_image_bytes(kb[1], name=str(kb[0]))[0], enumerate(blobs)):
                pass
    return time.perf_counter() - start


def import_once(archive: Path, work: Path, limits: DatasetLimits, store: ObjectStore | None, bucket: str,
                prefix: str) -> tuple[float, int]:
    uploads: list[Future] = []
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        def store_image(path: Path, name: str) -> None:
            if store is not None:
                uploads.append(pool.submit(store.put_file, bucket, f"{prefix}images/{name}", path))

        start = time.perf_counter()
        dataset = normalize_dataset([archive], [archive.name], "", work, store_image, limits=limits)
        for future in uploads:
            future.result()
        elapsed = time.perf_counter() - start
    assert len(dataset.images) == len(uploads) or store is None
    return elapsed, len(dataset.images)


def upload_only(files: list[Path], store: ObjectStore, bucket: str, prefix: str) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        for future in [pool.submit(store.put_file, bucket, f"{prefix}{f.name}", f) for f in files]:
            future.result()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tuned-malloc", action="store_true")
    args = parser.parse_args()
    tuned = tune_allocator_for_images() if args.tuned_malloc else False
    limits = DatasetLimits()
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        tmp_path = Path(tmp)
        archive, blobs = make_dataset(args.images, tmp_path)
        with seaweed() as (server, settings):
            store, bucket = ObjectStore.from_settings(settings), settings.bucket
            sides: dict[str, list[float]] = {"decode_serial": [], "decode_parallel": [], "upload_only": [],
                                             "nostore": [], "s3": []}
            peaks, rss_before = [], []
            cpu: dict[str, list[float]] = {"nostore_self": [], "s3_self": [], "s3_seaweed": []}
            for r in range(args.rounds):
                sides["decode_serial"].append(decode_all(blobs, 1))
                sides["decode_parallel"].append(decode_all(blobs, limits.decode_threads))
                work = tmp_path / f"nostore-{r}"
                work.mkdir()
                before = cpu_s()
                sides["nostore"].append(import_once(archive, work, limits, None, bucket, "")[0])
                cpu["nostore_self"].append(cpu_s() - before)
                extracted = sorted((work / "files" / "images").glob("*.jpg"))
                sides["upload_only"].append(upload_only(extracted, store, bucket, f"upload-{r}/"))
                store.delete_prefix(bucket, f"upload-{r}/")
                work = tmp_path / f"s3-{r}"
                work.mkdir()
                rss_before.append(current_rss_mb())
                reset_peak_rss()
                before, weed_before = cpu_s(), cpu_s(server.pid)
                elapsed, count = import_once(archive, work, limits, store, bucket, f"datasets/bench-{r}/")
                cpu["s3_self"].append(cpu_s() - before)
                cpu["s3_seaweed"].append(cpu_s(server.pid) - weed_before)
                peaks.append(peak_rss_mb())
                sides["s3"].append(elapsed)
                store.delete_prefix(bucket, f"datasets/bench-{r}/")
        figures = {name: round(median(values), 3) for name, values in sides.items()}
        archive_mb = archive.stat().st_size / 1e6
    emit({
        "bench": "dataset_import",
        "images": count,
        "image_size": "768x576",
        "archive_mb": round(archive_mb, 1),
        "rounds": args.rounds,
        "tuned_malloc": tuned,
        "decode_threads": limits.decode_threads,
        "upload_threads": UPLOAD_THREADS,
        "cpu_cores": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
        "decode_serial_s": figures["decode_serial"],
        "decode_parallel_s": figures["decode_parallel"],
        "upload_only_s": figures["upload_only"],
        "import_nostore_s": figures["nostore"],
        "import_s3_s": figures["s3"],
        "images_per_s": round(count / figures["s3"], 1),
        "import_over_decode": round(figures["s3"] / figures["decode_parallel"], 2),
        "s3_over_nostore": round(figures["s3"] / figures["nostore"], 2),
        "cpu_nostore_self_s": round(median(cpu["nostore_self"]), 2),
        "cpu_s3_self_s": round(median(cpu["s3_self"]), 2),
        "cpu_s3_seaweed_s": round(median(cpu["s3_seaweed"]), 2),
        "peak_rss_mb": round(max(peaks), 1),
        "rss_before_import_mb": round(min(rss_before), 1),
        "all_runs": sides,
    })


if __name__ == "__main__":
    main()
