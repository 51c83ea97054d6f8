"""Dataset import: uploaded files (one archive, or loose files) -> validated images + COCO-style annotations.

`normalize_dataset` reads COCO, Pascal VOC, ImageNet-style class folders, YOLO txt and plain images
(one reader module each in services/accuracy/formats/), validates every image (header size first, then
a full decode), hands each accepted image to `store_image` under its canonical name as soon as it is
validated, and returns a NormalizedDataset whose manifest(), annotations and summary() the caller stores
(services.accuracy.publish does, for the service).

Canonical layout
  images     ids: COCO keeps its own image ids; other formats number the accepted images 1..N in path
             order. File name f"{id:06d}{ext}", ext from the content (.jpg .png .bmp .webp), not the name.
  categories COCO keeps its ids (91-style numbering survives); VOC, YOLO and ImageNet number 1..N in
             names order (names file order, else sorted names; YOLO class k -> id k+1).
  boxes      COCO [x, y, w, h] in pixels of the stored image, clipped to it; annotation ids renumbered
             1..M; segmentation and keypoints are not kept; VOC corners are taken as continuous
             coordinates (bbox = [xmin, ymin, xmax-xmin, ymax-ymin]), "difficult" kept as an extra key.
  labels     ImageNet-style: image id -> category id (the folder holding the image).

Hostile or broken input: the whole import fails with InvalidArgument (field "sources", the file and
line or id named) for archive attacks (traversal, absolute paths, links, bombs, nested archives, too
many files), malformed or unsafe annotation files (bad JSON/XML, DTDs/entities, structural errors,
duplicate image or category ids) and datasets left with no usable image. Single items are skipped and
listed in warnings: non-images, empty, damaged or oversized images (pixel count checked from the
header before decoding), annotations of missing images, boxes of unknown classes, of zero or
negative size, or wholly outside their image; boxes reaching outside are clipped (warned);
duplicate annotation ids are warned about (annotations are renumbered anyway).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
import statistics
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from services.accuracy.formats import FIELD, FORMATS, Item, Plan, RawBox, Tree, Warnings, read_plan
from services.common.archives import ArchiveLimits, extract, is_archive
from workbench_runtime.errors import InvalidArgument
from services.common.images import MAX_IMAGE_PIXELS, decode_image_bytes

__all__ = ["DatasetLimits", "ImageEntry", "NormalizedDataset", "normalize_dataset", "FORMATS"]

# bins of the boxes-per-image histogram
_BOX_BINS = ((0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, None))
_JUNK = re.compile(r"(^|/)(__MACOSX/|\.[^/]*$|\.[^/]*/|Thumbs\.db$|desktop\.ini$)", re.IGNORECASE)
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


@dataclass(frozen=True)
class DatasetLimits:
    max_files: int = 200_000  # archive members, or loose files
    max_total_bytes: int = 10 * 1024**3  # extracted bytes
    max_ratio: float = 200.0  # extracted / compressed, per zip member and for the whole archive
    max_images: int = 100_000
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_image_bytes: int = 200 * 1024**2
    max_annotation_bytes: int = 1024**3  # one JSON/XML/txt file
    max_boxes: int = 10_000_000
    decode_threads: int = max(1, min(4, os.cpu_count() or 1))
    warnings_per_kind: int = 20


@dataclass
class ImageEntry:
    id: int
    file_name: str  # canonical, e.g. "000001.jpg"
    original_name: str  # its path in the upload
    width: int
    height: int
    sha256: str
    size: int


@dataclass
class NormalizedDataset:
    format: str  # "COCO" | "VOC" | "IMAGENET" | "YOLO" | "IMAGES"
    images: list[ImageEntry]
    categories: list[dict]  # [{"id", "name"}]; empty for plain images
    annotations: dict | None  # COCO instances JSON for detection sets; None otherwise
    labels: dict[int, int] | None  # classification sets: image id -> category id
    warnings: list[str]

    def _boxes_per_image(self) -> Counter:
        counts: Counter = Counter()
        for ann in (self.annotations or {}).get("annotations", []):
            counts[ann["image_id"]] += 1
        return counts

    def class_stats(self) -> list[dict]:
        """[{"id", "name", "boxes", "images"}] per category, in category order."""
        boxes: Counter = Counter()
        images: dict[int, set] = defaultdict(set)
        for ann in (self.annotations or {}).get("annotations", []):
            boxes[ann["category_id"]] += 1
            images[ann["category_id"]].add(ann["image_id"])
        for image_id, category_id in (self.labels or {}).items():
            images[category_id].add(image_id)
        return [{"id": c["id"], "name": c["name"], "boxes": boxes[c["id"]], "images": len(images[c["id"]])}
                for c in self.categories]

    def _annotated(self) -> int:
        if self.labels is not None:
            return len(self.labels)
        return len(self._boxes_per_image())

    def _sizes(self) -> dict[str, int]:
        widths = [e.width for e in self.images] or [0]
        heights = [e.height for e in self.images] or [0]
        return {"min_width": min(widths), "min_height": min(heights),
                "median_width": int(statistics.median_low(widths)),
                "median_height": int(statistics.median_low(heights)),
                "max_width": max(widths), "max_height": max(heights)}

    def summary(self) -> dict:
        """The fields of workbench.v1.DatasetSummary, by name."""
        return {"format": self.format, "image_count": len(self.images), "annotated_image_count": self._annotated(),
                "box_count": len((self.annotations or {}).get("annotations", [])), "classes": self.class_stats(),
                **self._sizes(), "warnings": list(self.warnings)}

    def manifest(self) -> dict:
        """Everything about the stored dataset but the boxes (those are in annotations), JSON-able."""
        per_image = self._boxes_per_image()
        histogram = {}
        for low, high in _BOX_BINS:
            label = str(low) if low == high else (f"{low}-{high}" if high else f"{low}+")
            histogram[label] = sum(1 for e in self.images
                                   if per_image[e.id] >= low and (high is None or per_image[e.id] <= high))
        images = []
        for entry in self.images:
            row = asdict(entry)
            if self.labels is not None and entry.id in self.labels:
                row["category_id"] = self.labels[entry.id]
            images.append(row)
        summary = self.summary()
        return {
            "version": 1,
            "format": self.format,
            "image_count": len(self.images),
            "annotated_image_count": summary["annotated_image_count"],
            "box_count": summary["box_count"],
            "has_annotations": self.annotations is not None,
            "task": "detection" if self.annotations is not None else (
                "classification" if self.labels is not None else "none"),
            "images": images,
            "categories": self.categories,
            "classes": summary["classes"],
            "boxes_per_image": histogram if self.annotations is not None else {},
            "image_size": self._sizes(),
            "warnings": self.warnings,
        }


def normalize_dataset(sources: list[Path], file_names: list[str], fmt: str, workdir: Path,
                      store_image: Callable[[Path, str], None],
                      progress: Callable[..., None] = lambda *a, **k: None,
                      limits: DatasetLimits = DatasetLimits()) -> NormalizedDataset:
    """Validate and normalize an uploaded dataset; see the module docstring for the rules.

    sources: the downloaded files, one archive or loose files; file_names: the user's names for them
    (format hints only, never paths); fmt: one of FORMATS or "" to detect; workdir: scratch space
    (archives are extracted under it; the caller removes it). store_image(path, canonical_name) is
    called for each accepted image, in id order, as soon as it is validated; the file stays in place
    until the caller removes workdir. progress(stage, fraction, message): fraction is overall, 0..0.95.
    Raises InvalidArgument when the import fails; the caller then deletes what store_image stored."""
    fmt = (fmt or "").strip().upper()
    if fmt in ("", "UNSPECIFIED"):
        fmt = ""
    elif fmt not in FORMATS:
        raise InvalidArgument(f"format {fmt!r} is not one of {', '.join(FORMATS)}", field="format")
    warnings = Warnings(limits.warnings_per_kind)
    progress("extract", 0.0, f"{len(sources)} source file(s)")
    tree = _gather([Path(s) for s in sources], list(file_names), Path(workdir), limits, warnings)
    progress("read", 0.05, f"{len(tree.files)} files; reading annotations")
    plan = read_plan(tree, fmt, warnings, max_annotation_bytes=limits.max_annotation_bytes,
                     max_boxes=limits.max_boxes)
    _note_leftovers(tree, plan, warnings)
    progress("images", 0.1, f"{plan.format}: {len(plan.items)} image files to check")
    return _materialize(plan, tree, store_image, warnings, limits, progress)


# ---- sources -> file tree ------------------------------------------------------------------------


def _gather(sources: list[Path], file_names: list[str], workdir: Path, limits: DatasetLimits,
            warnings: Warnings) -> Tree:
    if not sources:
        raise InvalidArgument("sources must list the uploaded dataset files", field=FIELD)
    if len(file_names) != len(sources):
        raise InvalidArgument(f"file_names has {len(file_names)} names for {len(sources)} sources",
                              field="file_names")
    archives = [name for path, name in zip(sources, file_names) if is_archive(name) or _archive_magic(path)]
    if archives and len(sources) > 1:
        raise InvalidArgument(f"upload one archive alone, or loose files without archives ({', '.join(archives)} "
                              "is an archive among other files)", field=FIELD, reason="SOURCES_MIXED")
    files: dict[str, Path] = {}
    if archives:
        dest = workdir / "files"
        if dest.exists() and any(dest.iterdir()):
            raise InvalidArgument("workdir/files must be empty", field="workdir")
        archive_limits = ArchiveLimits(max_members=limits.max_files, max_total_bytes=limits.max_total_bytes,
                                       max_ratio=limits.max_ratio, allow_nested_archives=False)
        for path in extract(sources[0], dest, archive_limits, field=FIELD, name=_loose_name(file_names[0], 0)):
            files[path.relative_to(dest).as_posix()] = path
    else:
        if len(sources) > limits.max_files:
            raise InvalidArgument(f"{len(sources)} files uploaded; at most {limits.max_files} are accepted",
                                  field=FIELD, reason="DATASET_TOO_LARGE")
        total = 0
        for i, (path, name) in enumerate(zip(sources, file_names)):
            total += path.stat().st_size
            if total > limits.max_total_bytes:
                raise InvalidArgument(f"the files total more than {limits.max_total_bytes} bytes", field=FIELD,
                                      reason="DATASET_TOO_LARGE")
            rel = _loose_name(name, i)
            if rel in files:
                raise InvalidArgument(f"two files are named {rel!r}; loose files need distinct names",
                                      field="file_names", reason="DUPLICATE_NAME")
            files[rel] = path
    junk = [rel for rel in files if _JUNK.search(rel)]
    if junk:
        warnings.add("hidden files ignored", f"{len(junk)} hidden or system file(s) ignored, e.g. {junk[0]}")
    skipped = set(junk)
    return Tree({rel: path for rel, path in files.items() if rel not in skipped})


def _archive_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512)
    return head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar"


def _loose_name(name: str, index: int) -> str:
    """The last component of a user's name for a loose file, printable; never a path."""
    base = PurePosixPath(name.replace("\\", "/")).name
    base = "".join(c for c in base if c.isprintable()).strip()
    return base if base not in ("", ".", "..") else f"file-{index}"


def _note_leftovers(tree: Tree, plan: Plan, warnings: Warnings) -> None:
    consumed = {item.rel for item in plan.items} | plan.used
    unlisted = []
    for rel in tree.files:
        if rel in consumed:
            continue
        if plan.unlisted_images_ignored and tree.is_image_candidate(rel):
            unlisted.append(rel)
        else:
            warnings.add("files ignored", f"{rel}: not part of the {plan.format} dataset; ignored")
    if unlisted:
        source = ", ".join(sorted(plan.used))
        warnings.add("files ignored", f"{len(unlisted)} file(s) not listed in {source} left out, e.g. {unlisted[0]}")


# ---- images ---------------------------------------------------------------------------------------


def _inspect(path: Path, name: str, limits: DatasetLimits):
    """(header, sha256, size) of a valid image, or the InvalidArgument saying why it is not one."""
    try:
        size = path.stat().st_size
        if size > limits.max_image_bytes:
            return InvalidArgument(f"{name} is {size} bytes, over the {limits.max_image_bytes} byte image limit",
                                   field=FIELD)
        data = path.read_bytes()
        header, _ = decode_image_bytes(data, name=name, max_pixels=limits.max_image_pixels, field=FIELD)
        return header, hashlib.sha256(data).hexdigest(), size
    except InvalidArgument as exc:
        return exc
    except OSError as exc:
        return InvalidArgument(f"{name} cannot be read: {exc.strerror or exc}", field=FIELD)


def _inspect_all(pool: ThreadPoolExecutor, items: list[Item], tree: Tree, limits: DatasetLimits) -> Iterator:
    """(item, result) in order, decoding a few images ahead on the pool's threads."""
    pending: deque = deque()
    upcoming = iter(items)
    for item in itertools.islice(upcoming, 2 * limits.decode_threads):
        pending.append((item, pool.submit(_inspect, tree.files[item.rel], item.rel, limits)))
    while pending:
        item, future = pending.popleft()
        following = next(upcoming, None)
        if following is not None:
            pending.append((following, pool.submit(_inspect, tree.files[following.rel], following.rel, limits)))
        yield item, future.result()


def _materialize(plan: Plan, tree: Tree, store_image: Callable[[Path, str], None], warnings: Warnings,
                 limits: DatasetLimits, progress: Callable[..., None]) -> NormalizedDataset:
    items = plan.items
    if len(items) > limits.max_images:
        raise InvalidArgument(f"the dataset holds {len(items)} image files; at most {limits.max_images} are accepted",
                              field=FIELD, reason="DATASET_TOO_LARGE")
    entries: list[ImageEntry] = []
    coco_images, annotations = [], []
    labels: dict[int, int] = {}
    first_of: dict[str, str] = {}
    next_id, step = 1, max(1, len(items) // 50)
    pool = ThreadPoolExecutor(limits.decode_threads, thread_name_prefix="decode")
    try:
        for done, (item, result) in enumerate(_inspect_all(pool, items, tree, limits), 1):
            if done % step == 0 or done == len(items):
                progress("images", 0.1 + 0.85 * done / len(items), f"{done}/{len(items)} images checked")
            if isinstance(result, InvalidArgument):
                lost = f" with its {len(item.boxes)} box(es)" if item.boxes else ""
                warnings.add("files skipped", f"{result.message}; skipped{lost}")
                continue
            header, sha256, size = result
            if item.source_id is not None:
                image_id = item.source_id
            else:
                image_id, next_id = next_id, next_id + 1
            file_name = f"{image_id:06d}{header.suffix}"
            store_image(tree.files[item.rel], file_name)
            entries.append(ImageEntry(image_id, file_name, item.rel, header.width, header.height, sha256, size))
            if sha256 in first_of:
                warnings.add("duplicate images", f"{item.rel} has the same content as {first_of[sha256]}")
            else:
                first_of[sha256] = item.rel
            if item.declared_size and item.declared_size != (header.width, header.height):
                warnings.add("images of another size than declared",
                             f"{item.where}: declared {item.declared_size[0]}x{item.declared_size[1]} but the "
                             f"image is {header.width}x{header.height}; its boxes are kept as given")
            if item.label is not None:
                labels[image_id] = item.label
            if plan.detection:
                coco_images.append({"id": image_id, "file_name": file_name, "width": header.width,
                                    "height": header.height, "original_file_name": item.rel})
                for box, bbox, area in _finish_boxes(item.boxes, header.width, header.height, warnings):
                    annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": box.category_id,
                                  "bbox": bbox, "area": area, "iscrowd": box.iscrowd}
                    annotations.append({**annotation, **box.extra})
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if not entries:
        lines = warnings.lines()
        why = f"; first problem: {lines[0]}" if lines else ""
        raise InvalidArgument(f"the upload holds no usable image ({len(items)} candidate file(s)){why}",
                              field=FIELD, reason="DATASET_EMPTY")
    coco = None
    if plan.detection:
        coco = {"info": {"description": f"normalized from {plan.format} by Workbench"}, "licenses": [],
                "images": coco_images, "annotations": annotations, "categories": plan.categories}
    return NormalizedDataset(plan.format, entries, plan.categories, coco, labels if plan.classification else None,
                             warnings.lines())


def _finish_boxes(boxes: list[RawBox], width: int, height: int, warnings: Warnings):
    """(box, [x, y, w, h] in pixels, area) of the boxes that stay: clipped to the image, degenerate ones dropped."""
    for box in boxes:
        if box.normalized:
            cx, cy, w, h = box.bbox
            x, y, w, h = (cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height
        else:
            x, y, w, h = box.bbox
        shown = _fmt((x, y, w, h))
        if w <= 0 or h <= 0:
            warnings.add("boxes of zero or negative size dropped",
                         f"{box.where}: box {shown} has zero or negative size; dropped")
            continue
        x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h)
        if x2 <= x1 or y2 <= y1:
            warnings.add("boxes outside their image dropped",
                         f"{box.where}: box {shown} lies outside the {width}x{height} image; dropped")
            continue
        clipped = [x1, y1, x2 - x1, y2 - y1]
        area = box.area
        if not all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(clipped, (x, y, w, h))):
            warnings.add("boxes clipped to their image",
                         f"{box.where}: box {shown} reaches outside the {width}x{height} image; "
                         f"clipped to {_fmt(clipped)}")
            area = None
        bbox = [round(v, 3) for v in clipped]
        yield box, bbox, round(area if area is not None else bbox[2] * bbox[3], 3)


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"
