"""Class names beside the annotations: YOLO's obj.names / classes.names / *.names, classes.txt, VOC's
labelmap.txt, and the `names:` key of an Ultralytics data.yaml.

YAML is read with yaml.safe_load (as Ultralytics reads data.yaml), from files of at most MAX_YAML_BYTES:
`names` is a list, or an {index: name} map with indexes 0..N-1. A YAML file whose text has no top-level
`names:` line is not parsed at all, so unrelated YAML files in an upload are ignored as before.
"""

from __future__ import annotations

import re

import yaml

from services.accuracy.formats.common import FIELD, Reading
from workbench_runtime.errors import InvalidArgument

YOLO_NAME_FILES = ("obj.names", "classes.names", "coco.names", "voc.names")
YAML_SUFFIXES = (".yaml", ".yml")
MAX_YAML_BYTES = 1024**2
_NAMES_LINE = re.compile(r"^names\s*:", re.MULTILINE)


def class_names(reading: Reading, *, voc: bool = False) -> tuple[list[str] | None, str | None]:
    """Class names from obj.names/classes.names/*.names, classes.txt, data.yaml names: (or VOC labelmap.txt),
    as (names, the file they came from); (None, None) when no file names them."""
    tree = reading.tree
    by_name = lambda names: [r for r in tree.files if r.rsplit("/", 1)[-1].casefold() in names]  # noqa: E731
    known = by_name(YOLO_NAME_FILES)
    options = known + [r for r in tree.with_suffix(".names") if r not in known] + by_name(("classes.txt",))
    if voc:
        options = by_name(("labelmap.txt",)) + options
    for rel in options:
        if rel.casefold().endswith("labelmap.txt"):
            names = [line.split(":", 1)[0].strip() for line in tree.read_text(rel, reading.max_bytes).splitlines()
                     if line.strip() and not line.lstrip().startswith("#")]
            names = [n for n in names if n and n != "background"]
        else:
            names = [line.strip() for line in tree.read_text(rel, reading.max_bytes).splitlines() if line.strip()]
        if names:
            _note_other_names(reading, options, rel)
            return names, rel
    for rel in tree.with_suffix(*YAML_SUFFIXES):
        size = tree.files[rel].stat().st_size
        if size > MAX_YAML_BYTES:
            raise InvalidArgument(f"{rel} is {size} bytes; YAML files may have at most {MAX_YAML_BYTES}",
                                  field=FIELD, reason="ANNOTATIONS_TOO_LARGE")
        names = yaml_names(tree.read_text(rel, reading.max_bytes), rel)
        if names is not None:
            return names, rel
    return None, None


def _note_other_names(reading: Reading, options: list[str], chosen: str) -> None:
    for rel in options:
        if rel != chosen:
            reading.warnings.add("names files ignored", f"{rel} ignored: class names are read from {chosen}")


def yaml_names(text: str, rel: str) -> list[str] | None:
    """The top-level `names` of a YOLO data.yaml, as a list or an {index: name} map; None when absent."""
    line = _NAMES_LINE.search(text)
    if line is None:
        return None
    where = f"{rel} line {text.count(chr(10), 0, line.start()) + 1}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InvalidArgument(f"{rel} is malformed YAML: {problem}{at}", field=FIELD,
                              reason="ANNOTATIONS_MALFORMED") from None
    except RecursionError:
        raise InvalidArgument(f"{rel} nests YAML too deeply", field=FIELD, reason="ANNOTATIONS_MALFORMED") from None
    if not isinstance(data, dict) or "names" not in data:
        return None
    names = data["names"]
    if isinstance(names, dict):
        if not all(_is_index(k) for k in names):
            raise _malformed(where)
        names = {int(k): v for k, v in names.items()}
        if sorted(names) != list(range(len(names))):
            raise InvalidArgument(f"{where}: names indexes must be 0..N-1", field=FIELD,
                                  reason="ANNOTATIONS_MALFORMED")
        names = [names[k] for k in range(len(names))]
    if not isinstance(names, list) or not all(_is_name(n) for n in names):
        unquoted = isinstance(names, list) and any(n is None or isinstance(n, bool) for n in names)
        raise _malformed(where, " (quote names YAML reads as booleans or null, e.g. 'no')" if unquoted else "")
    return [str(n).strip() for n in names]


def _is_index(key) -> bool:
    """An index of an {index: name} map: an integer, or digits in quotes."""
    if isinstance(key, str):
        return key.strip().isascii() and key.strip().isdigit()
    return isinstance(key, int) and not isinstance(key, bool)


def _is_name(value) -> bool:
    """A class name: a non-empty string, or a number YAML read as one (`names: {0: 1}` names class "1")."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _malformed(where: str, hint: str = "") -> InvalidArgument:
    return InvalidArgument(f"{where}: names must be a list or an index: name map{hint}", field=FIELD,
                           reason="ANNOTATIONS_MALFORMED")
