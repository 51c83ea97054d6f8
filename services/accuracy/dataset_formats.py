"""Readers of the dataset formats we import: COCO, Pascal VOC, ImageNet-style folders, YOLO txt, plain images.

A reader looks only at the uploaded file tree and the annotation files; it never opens an image. It
returns a Plan: the image files in order, with their raw boxes (or class label) and the categories.
services.accuracy.datasets then validates each image, numbers it, and finishes the boxes against the
real image size (clipping, dropping). Rules for what is refused and what is skipped are in datasets.py.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from services.common.errors import InvalidArgument
from services.common.images import looks_like_image_name

FORMATS = ("COCO", "VOC", "IMAGENET", "YOLO", "IMAGES")
FIELD = "sources"
# files that describe a dataset rather than being its pictures
SIDE_SUFFIXES = frozenset({".json", ".xml", ".txt", ".names", ".yaml", ".yml", ".data", ".cfg", ".csv", ".md",
                           ".rst", ".html", ".htm", ".log", ".ini", ".py", ".sh"})
YOLO_NAME_FILES = ("obj.names", "classes.names", "coco.names", "voc.names")
YAML_SUFFIXES = (".yaml", ".yml")
# folders that split a plain image set rather than name classes
SPLIT_FOLDERS = frozenset({"train", "val", "valid", "validation", "test", "images", "imgs", "img"})


class Warnings:
    """Warning lines of one import: every kind listed up to `per_kind` times, then counted in one line."""

    def __init__(self, per_kind: int = 20):
        self.per_kind = per_kind
        self.counts: Counter[str] = Counter()
        self._lines: list[str] = []

    def add(self, kind: str, message: str) -> None:
        """kind: a plural phrase for the summary line, e.g. "boxes clipped to their image"."""
        self.counts[kind] += 1
        if self.counts[kind] <= self.per_kind:
            self._lines.append(message)

    def lines(self) -> list[str]:
        more = [f"... and {n - self.per_kind} more {kind}" for kind, n in self.counts.items() if n > self.per_kind]
        return self._lines + more


@dataclass
class RawBox:
    category_id: int
    # pixels x, y, w, h (COCO order); or, when normalized, YOLO's cx, cy, w, h in 0..1
    bbox: tuple[float, float, float, float]
    where: str  # for messages: "instances.json annotation 17", "a.xml object 2", "a.txt line 3"
    normalized: bool = False
    iscrowd: int = 0
    area: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Item:
    rel: str  # the image file in the tree
    boxes: list[RawBox] = field(default_factory=list)
    source_id: int | None = None  # COCO's own image id, kept
    label: int | None = None  # classification: the category id
    declared_size: tuple[int, int] | None = None
    where: str = ""


@dataclass
class Plan:
    format: str
    items: list[Item]
    categories: list[dict]
    detection: bool  # produces COCO annotations
    classification: bool = False  # produces image -> category labels
    used: set[str] = field(default_factory=set)  # side files the reader consumed
    unlisted_images_ignored: bool = False  # COCO: image files the JSON does not list are left out


@dataclass
class Tree:
    """The uploaded files: relative POSIX path (never trusted to touch the disk) -> local file."""

    files: dict[str, Path]

    def __post_init__(self) -> None:
        self.files = dict(sorted(self.files.items()))
        self.by_name: dict[str, list[str]] = defaultdict(list)
        self.by_folded: dict[str, list[str]] = defaultdict(list)
        self.by_stem: dict[str, list[str]] = defaultdict(list)
        for rel in self.files:
            name = rel.rsplit("/", 1)[-1]
            self.by_name[name].append(rel)
            self.by_folded[name.casefold()].append(rel)
            if self.is_image_candidate(rel):
                self.by_stem[_stem(name).casefold()].append(rel)

    def suffix(self, rel: str) -> str:
        return PurePosixPath(rel).suffix.lower()

    def is_image_candidate(self, rel: str) -> bool:
        """Not an annotation or text file; content decides later whether it is really an image."""
        return self.suffix(rel) not in SIDE_SUFFIXES

    def image_candidates(self) -> list[str]:
        return [rel for rel in self.files if self.is_image_candidate(rel)]

    def with_suffix(self, *suffixes: str) -> list[str]:
        return [rel for rel in self.files if self.suffix(rel) in suffixes]

    def read_text(self, rel: str, limit: int) -> str:
        return self.read_bytes(rel, limit).decode("utf-8-sig", errors="replace")

    def read_bytes(self, rel: str, limit: int) -> bytes:
        size = self.files[rel].stat().st_size
        if size > limit:
            raise InvalidArgument(f"{rel} is {size} bytes; annotation files may have at most {limit}",
                                  field=FIELD, reason="ANNOTATIONS_TOO_LARGE")
        return self.files[rel].read_bytes()

    def find(self, reference: str, near: Sequence[str] = (), *, images_only: bool = True,
             by_stem: bool = False) -> tuple[str | None, str]:
        """The file an annotation names, as (rel, "") or (None, why).

        Only the reference's trailing components are used (no path in it is ever opened): the file with
        the longest matching tail wins, ties go to the first of `near` folders; by_stem also accepts
        another image extension. Absolute paths and ".." in references are harmless here."""
        parts = [p for p in reference.replace("\\", "/").split("/") if p not in ("", ".", "..")]
        if not parts:
            return None, "names no file"
        candidates = self.by_name.get(parts[-1]) or self.by_folded.get(parts[-1].casefold(), [])
        if images_only:
            candidates = [c for c in candidates if self.is_image_candidate(c)]
        if not candidates and by_stem:
            candidates = self.by_stem.get(_stem(parts[-1]).casefold(), [])
        if not candidates:
            return None, "is not in the upload"
        if len(candidates) == 1:
            return candidates[0], ""
        folded = [p.casefold() for p in parts]

        def tail(rel: str) -> int:
            mine = [p.casefold() for p in rel.split("/")]
            n = 0
            while n < min(len(mine), len(folded)) and mine[-1 - n] == folded[-1 - n]:
                n += 1
            return n

        best = max(tail(c) for c in candidates)
        top = [c for c in candidates if tail(c) == best]
        if len(top) > 1:
            for folder in near:
                close = [c for c in top if _parent(c) == folder]
                if len(close) == 1:
                    return close[0], ""
            return None, f"is ambiguous: {', '.join(top[:3])}{' ...' if len(top) > 3 else ''} all match"
        return top[0], ""


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def _parent(rel: str) -> str:
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _finite(values: Iterable[Any]) -> tuple[float, ...] | None:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        out.append(float(v))
    return tuple(out)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# ---- detection ------------------------------------------------------------------------------------


def read_plan(tree: Tree, fmt: str, warnings: Warnings, *, max_annotation_bytes: int, max_boxes: int) -> Plan:
    """The Plan of the tree in format fmt ("" detects it)."""
    reader = _Reader(tree, warnings, max_annotation_bytes, max_boxes)
    if fmt == "COCO" or (not fmt and reader.coco_candidates()):
        return reader.coco()
    if fmt == "VOC" or (not fmt and reader.voc_files()):
        return reader.voc()
    if fmt == "YOLO" or (not fmt and reader.looks_yolo()):
        return reader.yolo()
    if fmt == "IMAGENET" or (not fmt and reader.looks_imagenet()):
        return reader.imagenet()
    return reader.images()


class _Reader:
    def __init__(self, tree: Tree, warnings: Warnings, max_annotation_bytes: int, max_boxes: int):
        self.tree, self.warnings = tree, warnings
        self.max_bytes, self.max_boxes = max_annotation_bytes, max_boxes
        self.boxes = 0
        self._json: dict[str, Any] = {}
        self._xml: dict[str, Element | None] | None = None

    def count_box(self) -> None:
        self.boxes += 1
        if self.boxes > self.max_boxes:
            raise InvalidArgument(f"the annotations hold more than {self.max_boxes} boxes", field=FIELD,
                                  reason="DATASET_TOO_LARGE")

    # ---- COCO -------------------------------------------------------------------------------

    def parse_json(self, rel: str) -> Any:
        if rel not in self._json:
            data = self.tree.read_bytes(rel, self.max_bytes)
            try:
                self._json[rel] = json.loads(data)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"{rel} is malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                                      field=FIELD, reason="ANNOTATIONS_MALFORMED") from None
            except UnicodeDecodeError as exc:
                raise InvalidArgument(f"{rel} is not UTF-8 JSON: {exc.reason} at byte {exc.start}",
                                      field=FIELD, reason="ANNOTATIONS_MALFORMED") from None
            except RecursionError:
                raise InvalidArgument(f"{rel} nests JSON too deeply", field=FIELD,
                                      reason="ANNOTATIONS_MALFORMED") from None
        return self._json[rel]

    def coco_candidates(self) -> list[str]:
        found = []
        for rel in self.tree.with_suffix(".json"):
            data = self.parse_json(rel)
            if isinstance(data, dict) and isinstance(data.get("images"), list) and "categories" in data:
                found.append(rel)
        return found

    def coco(self) -> Plan:
        candidates = self.coco_candidates()
        if not candidates:
            raise InvalidArgument("no COCO annotation file: a JSON file with images, annotations and categories",
                                  field=FIELD, reason="ANNOTATIONS_MISSING")
        if len(candidates) > 1:
            instances = [c for c in candidates if c.rsplit("/", 1)[-1].startswith("instances")]
            if len(instances) != 1:
                raise InvalidArgument(f"several COCO annotation files ({', '.join(candidates)}): upload one",
                                      field=FIELD, reason="ANNOTATIONS_AMBIGUOUS")
            candidates = instances
        rel = candidates[0]
        data = self.parse_json(rel)
        annotations = data.get("annotations", [])
        if not isinstance(data["categories"], list) or not isinstance(annotations, list):
            raise InvalidArgument(f"{rel}: categories and annotations must be lists", field=FIELD,
                                  reason="ANNOTATIONS_MALFORMED")
        if "annotations" not in data:
            self.warnings.add("files without annotations", f"{rel} has no annotations list: no image has boxes")

        categories, category_ids = [], set()
        for i, cat in enumerate(data["categories"]):
            if not isinstance(cat, dict) or not _is_id(cat.get("id")) or not isinstance(cat.get("name"), str):
                raise InvalidArgument(f"{rel}: categories[{i}] needs a non-negative integer id and a name",
                                      field=FIELD, reason="ANNOTATIONS_MALFORMED")
            if cat["id"] in category_ids:
                raise InvalidArgument(f"{rel}: category id {cat['id']} appears twice", field=FIELD,
                                      reason="DUPLICATE_ID")
            category_ids.add(cat["id"])
            kept = {"id": cat["id"], "name": cat["name"]}
            if isinstance(cat.get("supercategory"), str):
                kept["supercategory"] = cat["supercategory"]
            categories.append(kept)

        images: dict[int, tuple[int, dict]] = {}
        for i, img in enumerate(data["images"]):
            if not isinstance(img, dict) or not _is_id(img.get("id")):
                raise InvalidArgument(f"{rel}: images[{i}] needs a non-negative integer id", field=FIELD,
                                      reason="ANNOTATIONS_MALFORMED")
            if not isinstance(img.get("file_name"), str) or not img["file_name"].strip():
                raise InvalidArgument(f"{rel}: images[{i}] (id {img['id']}) has no file_name", field=FIELD,
                                      reason="ANNOTATIONS_MALFORMED")
            if img["id"] in images:
                raise InvalidArgument(
                    f"{rel}: image id {img['id']} appears twice (images[{images[img['id']][0]}] and images[{i}])",
                    field=FIELD, reason="DUPLICATE_ID")
            images[img["id"]] = (i, img)

        per_image: dict[int, list[RawBox]] = defaultdict(list)
        seen_ids: Counter = Counter()
        for i, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                raise InvalidArgument(f"{rel}: annotations[{i}] is not an object", field=FIELD,
                                      reason="ANNOTATIONS_MALFORMED")
            ann_id = ann.get("id", f"#{i}")
            if isinstance(ann_id, (int, str)) and not isinstance(ann_id, bool):
                seen_ids[ann_id] += 1
            where = f"{rel} annotation {ann_id}"
            if not _is_id(ann.get("image_id")) or ann["image_id"] not in images:
                self.warnings.add("annotations of unknown images dropped",
                                  f"{where}: image id {ann.get('image_id')!r} is not in images; dropped")
                continue
            if not _is_id(ann.get("category_id")) or ann["category_id"] not in category_ids:
                self.warnings.add("annotations with unknown categories dropped",
                                  f"{where}: unknown category id {ann.get('category_id')!r}; dropped")
                continue
            bbox = ann.get("bbox")
            values = _finite(bbox) if isinstance(bbox, list) and len(bbox) == 4 else None
            if values is None:
                self.warnings.add("annotations without a usable bbox dropped",
                                  f"{where}: bbox {str(bbox)[:60]} is not four finite numbers; dropped")
                continue
            area = ann.get("area")
            area = float(area) if _finite([area]) and area >= 0 else None
            crowd = 1 if ann.get("iscrowd") in (1, True) else 0
            per_image[ann["image_id"]].append(RawBox(ann["category_id"], values, where, iscrowd=crowd, area=area))
            self.count_box()
        duplicated = sorted((k for k, n in seen_ids.items() if n > 1), key=str)
        for ann_id in duplicated:
            self.warnings.add("duplicate annotation ids",
                              f"{rel}: annotation id {ann_id} appears {seen_ids[ann_id]} times; "
                              "annotations are renumbered 1..N")

        near = sorted({_parent(rel)} | {_join(_parent(rel), d) for d in ("images", "JPEGImages")})
        items, claimed = [], {}
        for image_id, (_, img) in images.items():
            boxes = per_image.pop(image_id, [])
            lost = f"; dropped with its {len(boxes)} annotation(s)" if boxes else "; dropped"
            found, why = self.tree.find(img["file_name"], near)
            if found is None:
                self.warnings.add("images missing from the upload",
                                  f"{rel}: image {image_id} {img['file_name']!r} {why}{lost}")
                continue
            if found in claimed:
                self.warnings.add("images listed twice",
                                  f"{rel}: image {image_id} {img['file_name']!r} is the file of image "
                                  f"{claimed[found]} too{lost}")
                continue
            claimed[found] = image_id
            declared = (img.get("width"), img.get("height"))
            items.append(Item(found, boxes, source_id=image_id, where=f"image {image_id} ({img['file_name']})",
                              declared_size=declared if all(_is_id(v) and v for v in declared) else None))
        return Plan("COCO", items, categories, detection=True, used={rel}, unlisted_images_ignored=True)

    # ---- Pascal VOC -------------------------------------------------------------------------

    def parse_xml(self, rel: str) -> Element:
        data = self.tree.read_bytes(rel, self.max_bytes)
        try:
            return SafeET.fromstring(data, forbid_dtd=True)
        except ParseError as exc:
            line, column = getattr(exc, "position", (0, 0))
            message = str(exc).split(":")[0]
            raise InvalidArgument(f"{rel} is malformed XML: {message} at line {line} column {column + 1}",
                                  field=FIELD, reason="ANNOTATIONS_MALFORMED") from None
        except DefusedXmlException as exc:
            raise InvalidArgument(
                f"{rel} declares a DTD or entities ({type(exc).__name__}), which annotation files may not: "
                "refused as a possible entity expansion attack", field=FIELD, reason="ANNOTATIONS_UNSAFE") from None

    def voc_files(self) -> dict[str, Element]:
        if self._xml is None:
            self._xml = {rel: self.parse_xml(rel) for rel in self.tree.with_suffix(".xml")}
        return {rel: root for rel, root in self._xml.items() if root is not None and root.tag == "annotation"}

    def voc(self) -> Plan:
        files = self.voc_files()
        if not files:
            raise InvalidArgument("no Pascal VOC annotation: an XML file whose root is <annotation>", field=FIELD,
                                  reason="ANNOTATIONS_MISSING")
        names, names_rel = self.names_file(voc=True)
        used = set(files) | ({names_rel} if names_rel else set())
        raw: dict[str, list[tuple[str, tuple[float, ...], str, dict]]] = {}
        declared: dict[str, tuple[int, int]] = {}
        seen_names: list[str] = []
        for rel, root in files.items():
            folder = _parent(rel)
            voc_root = _parent(folder) if folder.rsplit("/", 1)[-1] == "Annotations" else folder
            near = [_join(voc_root, "JPEGImages"), folder, voc_root]
            filename = (root.findtext("filename") or "").strip()
            found, why = self.tree.find(filename, near, by_stem=True) if filename else (None, "")
            if found is None:
                stem = _stem(rel.rsplit("/", 1)[-1])
                found, why2 = self.tree.find(stem + ".jpg", near, by_stem=True)
                why = why or why2
            if found is None:
                self.warnings.add("annotation files without their image",
                                  f"{rel}: its image {filename or _stem(rel)!r} {why}; dropped")
                continue
            if found in raw:
                self.warnings.add("images annotated twice",
                                  f"{rel}: image {found} already has an annotation file; this one is ignored")
                continue
            size = root.find("size")
            if size is not None:
                try:
                    declared[found] = (int(float(size.findtext("width") or 0)),
                                       int(float(size.findtext("height") or 0)))
                except ValueError:
                    pass
            boxes = []
            for n, obj in enumerate(root.iter("object"), 1):
                name = (obj.findtext("name") or "").strip()
                where = f"{rel} object {n}"
                box = obj.find("bndbox")
                try:
                    corners = tuple(float((box.findtext(k) or "").strip()) for k in ("xmin", "ymin", "xmax", "ymax"))
                except (ValueError, AttributeError):
                    corners = ()
                if not name or len(corners) != 4 or not all(math.isfinite(v) for v in corners):
                    self.warnings.add("objects without a name or a numeric bndbox dropped",
                                      f"{where}: needs a name and a bndbox of four numbers; dropped")
                    continue
                extra = {"difficult": 1} if (obj.findtext("difficult") or "0").strip() in ("1", "true") else {}
                boxes.append((name, corners, where, extra))
                if name not in seen_names:
                    seen_names.append(name)
            raw[found] = boxes
        if names is None:
            names = sorted(seen_names)
        ids = {name: i for i, name in enumerate(names, 1)}
        items = []
        for rel in sorted(raw):
            item = Item(rel, declared_size=declared.get(rel) if all(declared.get(rel, (0, 0))) else None,
                        where=rel)
            for name, (x1, y1, x2, y2), where, extra in raw[rel]:
                if name not in ids:
                    self.warnings.add("objects with unknown classes dropped",
                                      f"{where}: class {name!r} is not in {names_rel}; dropped")
                    continue
                item.boxes.append(RawBox(ids[name], (x1, y1, x2 - x1, y2 - y1), where, extra=extra))
                self.count_box()
            items.append(item)
        # images beside annotated ones (JPEGImages/) without an XML; masks and other folders stay out
        folders = {_parent(rel) for rel in raw}
        unannotated = [rel for rel in self.tree.image_candidates() if rel not in raw and _parent(rel) in folders]
        for rel in unannotated:
            if looks_like_image_name(rel):
                self.warnings.add("images without an annotation file",
                                  f"{rel} has no VOC annotation file; kept without boxes")
            items.append(Item(rel, where=rel))
        return Plan("VOC", items, [{"id": i, "name": n} for n, i in ids.items()], detection=True, used=used)

    def names_file(self, *, voc: bool = False) -> tuple[list[str] | None, str | None]:
        """Class names from obj.names/classes.names/*.names, classes.txt, data.yaml names: (or VOC labelmap.txt)."""
        tree = self.tree
        by_name = lambda names: [r for r in tree.files if r.rsplit("/", 1)[-1].casefold() in names]  # noqa: E731
        known = by_name(YOLO_NAME_FILES)
        options = known + [r for r in tree.with_suffix(".names") if r not in known] + by_name(("classes.txt",))
        if voc:
            options = by_name(("labelmap.txt",)) + options
        for rel in options:
            if rel.casefold().endswith("labelmap.txt"):
                names = [line.split(":", 1)[0].strip() for line in tree.read_text(rel, self.max_bytes).splitlines()
                         if line.strip() and not line.lstrip().startswith("#")]
                names = [n for n in names if n and n != "background"]
            else:
                names = [line.strip() for line in tree.read_text(rel, self.max_bytes).splitlines() if line.strip()]
            if names:
                self._note_other_names(options, rel)
                return names, rel
        for rel in tree.with_suffix(*YAML_SUFFIXES):
            names = yaml_names(tree.read_text(rel, self.max_bytes), rel)
            if names is not None:
                return names, rel
        return None, None

    def _note_other_names(self, options: list[str], chosen: str) -> None:
        for rel in options:
            if rel != chosen:
                self.warnings.add("names files ignored", f"{rel} ignored: class names are read from {chosen}")

    # ---- YOLO -------------------------------------------------------------------------------

    def yolo_label_files(self) -> dict[str, str]:
        """image rel -> its label .txt rel: same stem beside it, or under labels/ instead of images/."""
        txts = set(self.tree.with_suffix(".txt"))
        pairs = {}
        for image in self.tree.image_candidates():
            folder, stem = _parent(image), _stem(image.rsplit("/", 1)[-1])
            options = [_join(folder, stem + ".txt")]
            parts = folder.split("/") if folder else []
            if "images" in parts:
                k = len(parts) - 1 - parts[::-1].index("images")
                options.append("/".join(parts[:k] + ["labels"] + parts[k + 1:] + [stem + ".txt"]))
            for option in options:
                if option in txts:
                    pairs[image] = option
                    break
        return pairs

    def looks_yolo(self) -> bool:
        names = [r.rsplit("/", 1)[-1].casefold() for r in self.tree.files]
        return bool(self.yolo_label_files()) or any(n.endswith(".names") for n in names)

    def yolo(self) -> Plan:
        labels = self.yolo_label_files()
        names, names_rel = self.names_file()
        if not labels and names is None:
            raise InvalidArgument("no YOLO labels: no .txt beside (or under labels/ for) any image, and no names file",
                                  field=FIELD, reason="ANNOTATIONS_MISSING")
        used = set(labels.values()) | ({names_rel} if names_rel else set())
        items, max_class = [], -1
        for image in self.tree.image_candidates():
            item = Item(image, where=image)
            rel = labels.get(image)
            if rel is not None:
                for n, line in enumerate(self.tree.read_text(rel, self.max_bytes).splitlines(), 1):
                    box = self._yolo_line(rel, n, line, names)
                    if box is not None:
                        item.boxes.append(box)
                        max_class = max(max_class, box.category_id - 1)
                        self.count_box()
            items.append(item)
        if names is None:
            names = [f"class_{i}" for i in range(max_class + 1)]
            self.warnings.add("datasets without class names",
                              f"no names file (obj.names, *.names, classes.txt or data.yaml names:): "
                              f"classes are called class_0..class_{max_class}")
        categories = [{"id": i, "name": n} for i, n in enumerate(names, 1)]
        return Plan("YOLO", items, categories, detection=True, used=used)

    def _yolo_line(self, rel: str, n: int, line: str, names: list[str] | None) -> RawBox | None:
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            return None
        where = f"{rel} line {n}"
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            values = []
        polygon = len(values) >= 7 and len(values) % 2 == 1
        if not (len(values) == 5 or polygon) or not all(math.isfinite(v) for v in values):
            self.warnings.add("malformed label lines dropped",
                              f"{where}: {line.strip()[:60]!r} is not 'class cx cy w h' numbers; dropped")
            return None
        cls = values[0]
        if not cls.is_integer() or cls < 0 or (names is not None and cls >= len(names)):
            known = f" (the names file has {len(names)})" if names is not None else ""
            self.warnings.add("boxes with unknown classes dropped",
                              f"{where}: unknown class {tokens[0]}{known}; dropped")
            return None
        if polygon:  # Ultralytics segmentation label: the polygon's bounding box
            xs, ys = values[1::2], values[2::2]
            box = ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys))
        else:
            box = tuple(values[1:5])
        if max(abs(v) for v in box) > 1.5:
            self.warnings.add("boxes not normalized dropped",
                              f"{where}: coordinates above 1; YOLO boxes are normalized to 0..1; dropped")
            return None
        return RawBox(int(cls) + 1, box, where, normalized=True)

    # ---- ImageNet-style folders -------------------------------------------------------------

    def looks_imagenet(self) -> bool:
        images = [r for r in self.tree.image_candidates() if looks_like_image_name(r)]
        parents = {_parent(r) for r in images}
        names = {p.rsplit("/", 1)[-1].casefold() for p in parents}
        return (len(parents) >= 2 and "" not in parents and len({_parent(p) for p in parents}) == 1
                and not names <= SPLIT_FOLDERS)

    def imagenet(self) -> Plan:
        candidates = self.tree.image_candidates()
        classes = sorted({_parent(r).rsplit("/", 1)[-1] for r in candidates if _parent(r)})
        if not classes:
            raise InvalidArgument("an ImageNet-style dataset needs class folders (<class>/<image>): upload one "
                                  "archive holding them", field=FIELD, reason="ANNOTATIONS_MISSING")
        ids = {name: i for i, name in enumerate(classes, 1)}
        items, outside = [], set()
        for rel in candidates:
            if not _parent(rel):
                self.warnings.add("images outside class folders skipped",
                                  f"{rel} is not inside a class folder; skipped")
                outside.add(rel)
                continue
            items.append(Item(rel, label=ids[_parent(rel).rsplit("/", 1)[-1]], where=rel))
        return Plan("IMAGENET", items, [{"id": i, "name": n} for n, i in ids.items()], detection=False,
                    classification=True, used=outside)

    # ---- plain images -----------------------------------------------------------------------

    def images(self) -> Plan:
        return Plan("IMAGES", [Item(rel, where=rel) for rel in self.tree.image_candidates()], [], detection=False)


# ---- a small reader of the `names:` key of YOLO data.yaml files ----------------------------------

_NAMES_KEY = re.compile(r"^names\s*:\s*(.*?)\s*$")


def yaml_names(text: str, rel: str) -> list[str] | None:
    """names: of a YOLO data.yaml, as a flow list, a block list or an index map; None when absent."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _NAMES_KEY.match(_strip_comment(line))
        if not m:
            continue
        rest = m.group(1)
        try:
            if rest.startswith(("[", "{")):
                closing = "]" if rest[0] == "[" else "}"
                j = i
                while not _strip_comment(rest).rstrip().endswith(closing) and j + 1 < len(lines):
                    j += 1
                    rest += " " + _strip_comment(lines[j]).strip()
                inner = _strip_comment(rest).strip()[1:-1]
                values = _split_flow(inner)
                if closing == "}":
                    return _index_map([v.split(":", 1) for v in values], rel, i + 1)
                return [_unquote(v) for v in values]
            if rest:
                raise ValueError
            block = []
            for j in range(i + 1, len(lines)):
                body = _strip_comment(lines[j])
                if not body.strip():
                    continue
                if not body[0].isspace() and not body.startswith("-"):
                    break
                block.append(body.strip())
            if not block:
                raise ValueError
            if all(b.startswith("-") for b in block):
                return [_unquote(b[1:]) for b in block]
            return _index_map([b.split(":", 1) for b in block], rel, i + 1)
        except (ValueError, IndexError):
            raise InvalidArgument(f"{rel} line {i + 1}: names must be a list or an index: name map",
                                  field=FIELD, reason="ANNOTATIONS_MALFORMED") from None
    return None


def _index_map(pairs: list[list[str]], rel: str, line: int) -> list[str]:
    if any(len(p) != 2 for p in pairs):
        raise ValueError
    mapping = {int(_unquote(k)): _unquote(v) for k, v in pairs}
    if sorted(mapping) != list(range(len(mapping))):
        raise InvalidArgument(f"{rel} line {line}: names indexes must be 0..N-1", field=FIELD,
                              reason="ANNOTATIONS_MALFORMED")
    return [mapping[k] for k in range(len(mapping))]


def _strip_comment(line: str) -> str:
    quote = None
    for k, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (k == 0 or line[k - 1].isspace()):
            return line[:k]
    return line


def _split_flow(inner: str) -> list[str]:
    values, current, quote = [], "", None
    for ch in inner:
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        if ch == "," and quote is None:
            values.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        values.append(current)
    return [v.strip() for v in values if v.strip()]


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].replace("''", "'") if value[0] == "'" else value[1:-1]
    if not value:
        raise ValueError
    return value
