"""Previews of a stored dataset: a PNG grid of its first images with their boxes and class names drawn.

render_preview draws from local files; store_preview fetches the first images of a stored dataset, draws
them and stores the PNG beside the dataset.
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np

from services.common.dataset_files import ANNOTATIONS, MANIFEST
from workbench_runtime.errors import InvalidArgument
from services.common.images import decode_image
from services.common.object_store import ObjectRef, ObjectStore, validate_prefix

TILE_WIDTH, TILE_HEIGHT, CAPTION_HEIGHT, GAP = 320, 240, 22, 4
_BACKGROUND, _TILE_BACKGROUND = (40, 40, 40), (24, 24, 24)


def preview_size(count: int, columns: int | None = None) -> tuple[int, int]:
    """(width, height) in pixels of render_preview's PNG for count images."""
    columns = columns or _columns(count)
    rows = math.ceil(count / columns)
    return (columns * TILE_WIDTH + (columns + 1) * GAP, rows * (TILE_HEIGHT + CAPTION_HEIGHT) + (rows + 1) * GAP)


def _columns(count: int) -> int:
    return max(1, min(4, math.ceil(math.sqrt(count))))


def _color(category_id: int) -> tuple[int, int, int]:
    hsv = np.uint8([[[(category_id * 47) % 180, 200, 255]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _label(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], *, above: bool = True) -> None:
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.42
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    top = y - th - base - 2 if above and y - th - base - 2 >= 0 else y
    x = max(0, min(x, canvas.shape[1] - tw - 4))
    cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + base + 2), color, -1)
    luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    cv2.putText(canvas, text, (x + 2, top + th + 1), font, scale, (0, 0, 0) if luminance > 128 else (255, 255, 255),
                1, cv2.LINE_AA)


def render_preview(manifest: Mapping, annotations: Mapping | None, paths: Mapping[int, Path | str],
                   max_images: int | None = None, *, columns: int | None = None) -> bytes:
    """A PNG grid of the manifest's first images (those in paths: image id -> local file), boxes and class
    names drawn; each tile TILE_WIDTH x TILE_HEIGHT with a caption (file name, box count or class).

    annotations: the dataset's COCO JSON, or None. Classification sets show the class of each image."""
    chosen = [e for e in manifest.get("images", []) if e["id"] in paths][:max_images or None]
    if not chosen:
        raise InvalidArgument("the dataset has no image to preview", field="dataset")
    names = {c["id"]: c["name"] for c in (annotations or {}).get("categories") or manifest.get("categories", [])}
    boxes: dict[int, list[dict]] = defaultdict(list)
    wanted = {e["id"] for e in chosen}
    for ann in (annotations or {}).get("annotations", []):
        if ann["image_id"] in wanted:
            boxes[ann["image_id"]].append(ann)
    columns = columns or _columns(len(chosen))
    width, height = preview_size(len(chosen), columns)
    canvas = np.full((height, width, 3), _BACKGROUND, np.uint8)
    for k, entry in enumerate(chosen):
        left = GAP + (k % columns) * (TILE_WIDTH + GAP)
        top = GAP + (k // columns) * (TILE_HEIGHT + CAPTION_HEIGHT + GAP)
        tile = np.full((TILE_HEIGHT, TILE_WIDTH, 3), _TILE_BACKGROUND, np.uint8)
        caption = entry.get("original_name") or entry["file_name"]
        try:
            image = decode_image(paths[entry["id"]], name=entry["file_name"], field="dataset")
        except InvalidArgument:
            _label(tile, "unreadable image", 8, TILE_HEIGHT // 2, (0, 0, 200), above=False)
        else:
            scale = min(TILE_WIDTH / image.shape[1], TILE_HEIGHT / image.shape[0])
            w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
            dx, dy = (TILE_WIDTH - w) // 2, (TILE_HEIGHT - h) // 2
            tile[dy:dy + h, dx:dx + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            for ann in sorted(boxes.get(entry["id"], []), key=lambda a: -a["bbox"][2] * a["bbox"][3]):
                x, y, bw, bh = ann["bbox"]
                p1 = (dx + round(x * scale), dy + round(y * scale))
                p2 = (dx + round((x + bw) * scale), dy + round((y + bh) * scale))
                color = _color(ann["category_id"])
                cv2.rectangle(tile, p1, p2, color, 2)
                _label(tile, names.get(ann["category_id"], str(ann["category_id"])), p1[0], p1[1], color)
            if entry.get("category_id") is not None:
                _label(tile, names.get(entry["category_id"], str(entry["category_id"])), dx + 4, dy + 4,
                       _color(entry["category_id"]), above=False)
            if annotations is not None:
                caption += f"  ({len(boxes.get(entry['id'], []))} boxes)"
        canvas[top:top + TILE_HEIGHT, left:left + TILE_WIDTH] = tile
        cv2.putText(canvas, _fit(caption, TILE_WIDTH - 8), (left + 4, top + TILE_HEIGHT + 15),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", canvas)
    if not ok:  # pragma: no cover - encoding a uint8 BGR canvas does not fail
        raise RuntimeError("PNG encoding failed")
    return png.tobytes()


def _fit(text: str, width: int) -> str:
    """text, or its end after "..." when it is wider than width pixels."""
    def fits(t: str) -> bool:
        return cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] <= width

    if fits(text):
        return text
    while len(text) > 1 and not fits("..." + text):
        text = text[1:]
    return "..." + text


def store_preview(store: ObjectStore, bucket: str, prefix: str, *, has_annotations: bool, max_images: int = 0,
                  output_bucket: str = "") -> ObjectRef:
    """render_preview of the stored dataset at bucket/prefix (at most 24 images, 6 when max_images is 0),
    stored as {prefix}previews/preview-{count}.png in output_bucket (default: the dataset's bucket)."""
    validate_prefix(prefix, field="dataset.prefix")
    manifest = store.get_json(bucket, prefix + MANIFEST)
    annotations = (store.get_json(bucket, prefix + ANNOTATIONS, max_bytes=512 * 1024 * 1024)
                   if has_annotations else None)
    count = min(max_images or 6, 24, len(manifest["images"]))
    with tempfile.TemporaryDirectory(prefix="preview-") as tmp:
        paths = {}
        for entry in manifest["images"][:count]:
            path = Path(tmp) / entry["file_name"]
            store.get_file(bucket, f"{prefix}images/{entry['file_name']}", path,
                           expected_sha256=entry.get("sha256") or None)
            paths[entry["id"]] = path
        png = render_preview(manifest, annotations, paths)
    return store.put_bytes(output_bucket or bucket, f"{prefix}previews/preview-{count}.png", png)
