"""ImageNet-style class folders: <class>/<image>, all class folders in one parent; a classification set.

Categories are the folder names, sorted, numbered 1..N; images outside a class folder are skipped.
"""

from __future__ import annotations

from services.accuracy.formats.common import FIELD, Item, Plan, Reading, parent
from workbench_runtime.errors import InvalidArgument
from services.common.images import looks_like_image_name

NAME = "IMAGENET"
# folders that split a plain image set rather than name classes
SPLIT_FOLDERS = frozenset({"train", "val", "valid", "validation", "test", "images", "imgs", "img"})


def detect(reading: Reading) -> bool:
    images = [r for r in reading.tree.image_candidates() if looks_like_image_name(r)]
    parents = {parent(r) for r in images}
    names = {p.rsplit("/", 1)[-1].casefold() for p in parents}
    return (len(parents) >= 2 and "" not in parents and len({parent(p) for p in parents}) == 1
            and not names <= SPLIT_FOLDERS)


def read(reading: Reading) -> Plan:
    candidates = reading.tree.image_candidates()
    classes = sorted({parent(r).rsplit("/", 1)[-1] for r in candidates if parent(r)})
    if not classes:
        raise InvalidArgument("an ImageNet-style dataset needs class folders (<class>/<image>): upload one "
                              "archive holding them", field=FIELD, reason="ANNOTATIONS_MISSING")
    ids = {name: i for i, name in enumerate(classes, 1)}
    items, outside = [], set()
    for rel in candidates:
        if not parent(rel):
            reading.warnings.add("images outside class folders skipped",
                                 f"{rel} is not inside a class folder; skipped")
            outside.add(rel)
            continue
        items.append(Item(rel, label=ids[parent(rel).rsplit("/", 1)[-1]], where=rel))
    return Plan("IMAGENET", items, [{"id": i, "name": n} for n, i in ids.items()], detection=False,
                classification=True, used=outside)
