"""What every dataset format reader shares: the uploaded file tree, the Plan a reader returns, warnings, limits.

A reader looks only at the uploaded file tree and the annotation files; it never opens an image. It
returns a Plan: the image files in order, with their raw boxes (or class label) and the categories.
services.accuracy.dataset_import then validates each image, numbers it, and finishes the boxes against
the real image size (clipping, dropping). Rules for what is refused and what is skipped are there.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

from workbench_runtime.errors import InvalidArgument

FIELD = "sources"
# files that describe a dataset rather than being its pictures
SIDE_SUFFIXES = frozenset({".json", ".xml", ".txt", ".names", ".yaml", ".yml", ".data", ".cfg", ".csv", ".md",
                           ".rst", ".html", ".htm", ".log", ".ini", ".py", ".sh"})


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
                self.by_stem[stem(name).casefold()].append(rel)

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
            candidates = self.by_stem.get(stem(parts[-1]).casefold(), [])
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
                close = [c for c in top if parent(c) == folder]
                if len(close) == 1:
                    return close[0], ""
            return None, f"is ambiguous: {', '.join(top[:3])}{' ...' if len(top) > 3 else ''} all match"
        return top[0], ""


class Reading:
    """One reading of a tree: its files, the warnings, the limits, the boxes counted so far, and the
    annotation files already parsed (detection parses them once; the chosen reader reuses them)."""

    def __init__(self, tree: Tree, warnings: Warnings, max_annotation_bytes: int, max_boxes: int):
        self.tree, self.warnings = tree, warnings
        self.max_bytes, self.max_boxes = max_annotation_bytes, max_boxes
        self.boxes = 0
        self.parsed: dict[str, Any] = {}  # a reader's own cache, under its format's name

    def count_box(self) -> None:
        self.boxes += 1
        if self.boxes > self.max_boxes:
            raise InvalidArgument(f"the annotations hold more than {self.max_boxes} boxes", field=FIELD,
                                  reason="DATASET_TOO_LARGE")


def stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def parent(rel: str) -> str:
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def finite(values: Iterable[Any]) -> tuple[float, ...] | None:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        out.append(float(v))
    return tuple(out)


def is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
