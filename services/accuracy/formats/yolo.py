"""YOLO txt: one label file per image ("class cx cy w h" lines, normalized to 0..1; Ultralytics polygons
too), beside the image or under labels/ instead of images/; class names from a names file or data.yaml.

Class k is category id k + 1. Without a names file, classes are called class_0..class_N.
"""

from __future__ import annotations

import math

from services.accuracy.formats.common import FIELD, Item, Plan, RawBox, Reading, join, parent, stem
from services.accuracy.formats.names import class_names
from workbench_runtime.errors import InvalidArgument

NAME = "YOLO"


def label_files(reading: Reading) -> dict[str, str]:
    """image rel -> its label .txt rel: same stem beside it, or under labels/ instead of images/."""
    txts = set(reading.tree.with_suffix(".txt"))
    pairs = {}
    for image in reading.tree.image_candidates():
        folder, base = parent(image), stem(image.rsplit("/", 1)[-1])
        options = [join(folder, base + ".txt")]
        parts = folder.split("/") if folder else []
        if "images" in parts:
            k = len(parts) - 1 - parts[::-1].index("images")
            options.append("/".join(parts[:k] + ["labels"] + parts[k + 1:] + [base + ".txt"]))
        for option in options:
            if option in txts:
                pairs[image] = option
                break
    return pairs


def detect(reading: Reading) -> bool:
    names = [r.rsplit("/", 1)[-1].casefold() for r in reading.tree.files]
    return bool(label_files(reading)) or any(n.endswith(".names") for n in names)


def read(reading: Reading) -> Plan:
    labels = label_files(reading)
    names, names_rel = class_names(reading)
    if not labels and names is None:
        raise InvalidArgument("no YOLO labels: no .txt beside (or under labels/ for) any image, and no names file",
                              field=FIELD, reason="ANNOTATIONS_MISSING")
    used = set(labels.values()) | ({names_rel} if names_rel else set())
    items, max_class = [], -1
    for image in reading.tree.image_candidates():
        item = Item(image, where=image)
        rel = labels.get(image)
        if rel is not None:
            for n, line in enumerate(reading.tree.read_text(rel, reading.max_bytes).splitlines(), 1):
                box = _line(reading, rel, n, line, names)
                if box is not None:
                    item.boxes.append(box)
                    max_class = max(max_class, box.category_id - 1)
                    reading.count_box()
        items.append(item)
    if names is None:
        names = [f"class_{i}" for i in range(max_class + 1)]
        reading.warnings.add("datasets without class names",
                             f"no names file (obj.names, *.names, classes.txt or data.yaml names:): "
                             f"classes are called class_0..class_{max_class}")
    categories = [{"id": i, "name": n} for i, n in enumerate(names, 1)]
    return Plan("YOLO", items, categories, detection=True, used=used)


def _line(reading: Reading, rel: str, n: int, line: str, names: list[str] | None) -> RawBox | None:
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
        reading.warnings.add("malformed label lines dropped",
                             f"{where}: {line.strip()[:60]!r} is not 'class cx cy w h' numbers; dropped")
        return None
    cls = values[0]
    if not cls.is_integer() or cls < 0 or (names is not None and cls >= len(names)):
        known = f" (the names file has {len(names)})" if names is not None else ""
        reading.warnings.add("boxes with unknown classes dropped",
                             f"{where}: unknown class {tokens[0]}{known}; dropped")
        return None
    if polygon:  # Ultralytics segmentation label: the polygon's bounding box
        xs, ys = values[1::2], values[2::2]
        box = ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys))
    else:
        box = tuple(values[1:5])
    if max(abs(v) for v in box) > 1.5:
        reading.warnings.add("boxes not normalized dropped",
                             f"{where}: coordinates above 1; YOLO boxes are normalized to 0..1; dropped")
        return None
    return RawBox(int(cls) + 1, box, where, normalized=True)
