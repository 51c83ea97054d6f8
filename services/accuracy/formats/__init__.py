"""Readers of the dataset formats we import, one module each: COCO, Pascal VOC, ImageNet-style folders,
YOLO txt, plain images (common.py holds what they share, names.py the class-name files they read).

Each format module has NAME, detect(reading) -> bool and read(reading) -> Plan. read_plan picks the
reader named by the user, or detects one in READERS order (the first whose detect says yes).
"""

from __future__ import annotations

from services.accuracy.formats import coco, images, imagenet, voc, yolo
from services.accuracy.formats.common import FIELD, Item, Plan, RawBox, Reading, Tree, Warnings

__all__ = ["FIELD", "FORMATS", "READERS", "Item", "Plan", "RawBox", "Tree", "Warnings", "read_plan"]

FORMATS = ("COCO", "VOC", "IMAGENET", "YOLO", "IMAGES")  # the names a user may give, as DatasetFormat
READERS = (coco, voc, yolo, imagenet, images)  # in detection order; plain images take anything left


def read_plan(tree: Tree, fmt: str, warnings: Warnings, *, max_annotation_bytes: int, max_boxes: int) -> Plan:
    """The Plan of the tree in format fmt ("" detects it)."""
    reading = Reading(tree, warnings, max_annotation_bytes, max_boxes)
    for reader in READERS:
        if fmt == reader.NAME or (not fmt and reader.detect(reading)):
            return reader.read(reading)
    return images.read(reading)
