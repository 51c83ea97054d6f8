"""Plain images: every image file of the upload, no annotations; what any upload is when nothing else fits."""

from __future__ import annotations

from services.accuracy.formats.common import Item, Plan, Reading

NAME = "IMAGES"


def detect(reading: Reading) -> bool:
    return True


def read(reading: Reading) -> Plan:
    return Plan("IMAGES", [Item(rel, where=rel) for rel in reading.tree.image_candidates()], [], detection=False)
