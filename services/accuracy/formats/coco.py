"""COCO: one instances JSON (images, annotations, categories) naming the image files of the upload.

Image and category ids are kept; boxes are [x, y, w, h] in pixels; crowd flags and areas survive. Image
files the JSON does not list are left out (one warning line).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from services.accuracy.formats.common import FIELD, Item, Plan, RawBox, Reading, finite, is_id, join, parent
from workbench_runtime.errors import InvalidArgument

NAME = "COCO"


def detect(reading: Reading) -> bool:
    return bool(candidates(reading))


def parse_json(reading: Reading, rel: str) -> Any:
    """The JSON of rel, parsed once per reading."""
    cache = reading.parsed.setdefault("json", {})
    if rel not in cache:
        data = reading.tree.read_bytes(rel, reading.max_bytes)
        try:
            cache[rel] = json.loads(data)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"{rel} is malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                                  field=FIELD, reason="ANNOTATIONS_MALFORMED") from None
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"{rel} is not UTF-8 JSON: {exc.reason} at byte {exc.start}",
                                  field=FIELD, reason="ANNOTATIONS_MALFORMED") from None
        except RecursionError:
            raise InvalidArgument(f"{rel} nests JSON too deeply", field=FIELD,
                                  reason="ANNOTATIONS_MALFORMED") from None
    return cache[rel]


def candidates(reading: Reading) -> list[str]:
    """The JSON files that look like COCO annotations: images, and categories."""
    found = []
    for rel in reading.tree.with_suffix(".json"):
        data = parse_json(reading, rel)
        if isinstance(data, dict) and isinstance(data.get("images"), list) and "categories" in data:
            found.append(rel)
    return found


def read(reading: Reading) -> Plan:
    found = candidates(reading)
    if not found:
        raise InvalidArgument("no COCO annotation file: a JSON file with images, annotations and categories",
                              field=FIELD, reason="ANNOTATIONS_MISSING")
    if len(found) > 1:
        instances = [c for c in found if c.rsplit("/", 1)[-1].startswith("instances")]
        if len(instances) != 1:
            raise InvalidArgument(f"several COCO annotation files ({', '.join(found)}): upload one",
                                  field=FIELD, reason="ANNOTATIONS_AMBIGUOUS")
        found = instances
    rel = found[0]
    data = parse_json(reading, rel)
    annotations = data.get("annotations", [])
    if not isinstance(data["categories"], list) or not isinstance(annotations, list):
        raise InvalidArgument(f"{rel}: categories and annotations must be lists", field=FIELD,
                              reason="ANNOTATIONS_MALFORMED")
    if "annotations" not in data:
        reading.warnings.add("files without annotations", f"{rel} has no annotations list: no image has boxes")

    categories, category_ids = [], set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not is_id(cat.get("id")) or not isinstance(cat.get("name"), str):
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
        if not isinstance(img, dict) or not is_id(img.get("id")):
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
        if not is_id(ann.get("image_id")) or ann["image_id"] not in images:
            reading.warnings.add("annotations of unknown images dropped",
                                 f"{where}: image id {ann.get('image_id')!r} is not in images; dropped")
            continue
        if not is_id(ann.get("category_id")) or ann["category_id"] not in category_ids:
            reading.warnings.add("annotations with unknown categories dropped",
                                 f"{where}: unknown category id {ann.get('category_id')!r}; dropped")
            continue
        bbox = ann.get("bbox")
        values = finite(bbox) if isinstance(bbox, list) and len(bbox) == 4 else None
        if values is None:
            reading.warnings.add("annotations without a usable bbox dropped",
                                 f"{where}: bbox {str(bbox)[:60]} is not four finite numbers; dropped")
            continue
        area = ann.get("area")
        area = float(area) if finite([area]) and area >= 0 else None
        crowd = 1 if ann.get("iscrowd") in (1, True) else 0
        per_image[ann["image_id"]].append(RawBox(ann["category_id"], values, where, iscrowd=crowd, area=area))
        reading.count_box()
    duplicated = sorted((k for k, n in seen_ids.items() if n > 1), key=str)
    for ann_id in duplicated:
        reading.warnings.add("duplicate annotation ids",
                             f"{rel}: annotation id {ann_id} appears {seen_ids[ann_id]} times; "
                             "annotations are renumbered 1..N")

    near = sorted({parent(rel)} | {join(parent(rel), d) for d in ("images", "JPEGImages")})
    items, claimed = [], {}
    for image_id, (_, img) in images.items():
        boxes = per_image.pop(image_id, [])
        lost = f"; dropped with its {len(boxes)} annotation(s)" if boxes else "; dropped"
        found, why = reading.tree.find(img["file_name"], near)
        if found is None:
            reading.warnings.add("images missing from the upload",
                                 f"{rel}: image {image_id} {img['file_name']!r} {why}{lost}")
            continue
        if found in claimed:
            reading.warnings.add("images listed twice",
                                 f"{rel}: image {image_id} {img['file_name']!r} is the file of image "
                                 f"{claimed[found]} too{lost}")
            continue
        claimed[found] = image_id
        declared = (img.get("width"), img.get("height"))
        items.append(Item(found, boxes, source_id=image_id, where=f"image {image_id} ({img['file_name']})",
                          declared_size=declared if all(is_id(v) and v for v in declared) else None))
    return Plan("COCO", items, categories, detection=True, used={rel}, unlisted_images_ignored=True)
