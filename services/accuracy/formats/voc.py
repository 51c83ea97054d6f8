"""Pascal VOC: one XML file per image (root <annotation>, <object> with <name> and <bndbox>), images in
JPEGImages/ or beside the XML; class names from labelmap.txt or a names file, else the names found, sorted.

Corners are continuous coordinates: bbox = [xmin, ymin, xmax - xmin, ymax - ymin]; "difficult" is kept as an
extra key. XML files are parsed with defusedxml: a DTD or an entity refuses the whole import.
"""

from __future__ import annotations

import math
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from services.accuracy.formats.common import FIELD, Item, Plan, RawBox, Reading, join, parent, stem
from services.accuracy.formats.names import class_names
from workbench_runtime.errors import InvalidArgument
from services.common.images import looks_like_image_name

NAME = "VOC"


def detect(reading: Reading) -> bool:
    return bool(annotation_files(reading))


def parse_xml(reading: Reading, rel: str) -> Element:
    data = reading.tree.read_bytes(rel, reading.max_bytes)
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


def annotation_files(reading: Reading) -> dict[str, Element]:
    """rel -> root of every XML file whose root is <annotation> (every XML file is parsed, once per reading)."""
    if "xml" not in reading.parsed:
        reading.parsed["xml"] = {rel: parse_xml(reading, rel) for rel in reading.tree.with_suffix(".xml")}
    parsed = reading.parsed["xml"]
    return {rel: root for rel, root in parsed.items() if root is not None and root.tag == "annotation"}


def read(reading: Reading) -> Plan:
    files = annotation_files(reading)
    if not files:
        raise InvalidArgument("no Pascal VOC annotation: an XML file whose root is <annotation>", field=FIELD,
                              reason="ANNOTATIONS_MISSING")
    names, names_rel = class_names(reading, voc=True)
    used = set(files) | ({names_rel} if names_rel else set())
    raw: dict[str, list[tuple[str, tuple[float, ...], str, dict]]] = {}
    declared: dict[str, tuple[int, int]] = {}
    seen_names: list[str] = []
    for rel, root in files.items():
        folder = parent(rel)
        voc_root = parent(folder) if folder.rsplit("/", 1)[-1] == "Annotations" else folder
        near = [join(voc_root, "JPEGImages"), folder, voc_root]
        filename = (root.findtext("filename") or "").strip()
        found, why = reading.tree.find(filename, near, by_stem=True) if filename else (None, "")
        if found is None:
            base = stem(rel.rsplit("/", 1)[-1])
            found, why2 = reading.tree.find(base + ".jpg", near, by_stem=True)
            why = why or why2
        if found is None:
            reading.warnings.add("annotation files without their image",
                                 f"{rel}: its image {filename or stem(rel)!r} {why}; dropped")
            continue
        if found in raw:
            reading.warnings.add("images annotated twice",
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
                reading.warnings.add("objects without a name or a numeric bndbox dropped",
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
                reading.warnings.add("objects with unknown classes dropped",
                                     f"{where}: class {name!r} is not in {names_rel}; dropped")
                continue
            item.boxes.append(RawBox(ids[name], (x1, y1, x2 - x1, y2 - y1), where, extra=extra))
            reading.count_box()
        items.append(item)
    # images beside annotated ones (JPEGImages/) without an XML; masks and other folders stay out
    folders = {parent(rel) for rel in raw}
    unannotated = [rel for rel in reading.tree.image_candidates() if rel not in raw and parent(rel) in folders]
    for rel in unannotated:
        if looks_like_image_name(rel):
            reading.warnings.add("images without an annotation file",
                                 f"{rel} has no VOC annotation file; kept without boxes")
        items.append(Item(rel, where=rel))
    return Plan("VOC", items, [{"id": i, "name": n} for n, i in ids.items()], detection=True, used=used)
