"""Dataset categories against model labels, matched by name.

Names match case-insensitively with spaces, underscores and hyphens ignored ("Traffic_light" =
"traffic light" = "TrafficLight"), plus the few renamings between Darknet's coco.names / Pascal VOC and
the COCO annotations (motorbike = motorcycle, aeroplane = airplane, sofa = couch, tvmonitor = tv,
hair dryer = hair drier), so a YOLO model with the 80 coco.names labels maps onto a COCO JSON with its
91-style ids (person=1 ... toothbrush=90) by name, all 80 of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from workbench_runtime.errors import FailedPrecondition

# Darknet's data/coco.names, the order of every 80-class COCO detector's outputs
COCO80_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
    "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

# the COCO 2014/2017 category ids (1..90 with 10 gaps) of the same 80 classes, in the same order
COCO80_TO_91: tuple[int, ...] = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91),
)

# the categories of COCO's instances_*.json, with their own names
COCO_CATEGORIES: tuple[dict, ...] = tuple({"id": i, "name": n} for i, n in zip(COCO80_TO_91, (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)))

_COCO91_TO_80 = {cid: i for i, cid in enumerate(COCO80_TO_91)}
_IGNORED = re.compile(r"[\s_\-]+")
_SYNONYMS = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch", "tvmonitor": "tv",
             "hairdryer": "hairdrier"}


def coco80_to_91(index: int) -> int:
    """COCO category id of an 80-class output index (0 -> 1 person, 79 -> 90 toothbrush)."""
    return COCO80_TO_91[index]


def coco91_to_80(category_id: int) -> int | None:
    """80-class index of a COCO category id; None for the 10 unused ids (12, 26, 29, 30, ...)."""
    return _COCO91_TO_80.get(category_id)


def label_key(name: str) -> str:
    """The form names are compared in: casefolded, without spaces, underscores and hyphens, synonyms folded."""
    key = _IGNORED.sub("", str(name)).casefold()
    return _SYNONYMS.get(key, key)


@dataclass
class LabelMapping:
    """As workbench.v1.LabelMapping: model label index -> dataset category id, and what found no partner."""

    model_to_dataset: dict[int, int] = field(default_factory=dict)
    unmatched_model_labels: list[str] = field(default_factory=list)
    unmatched_dataset_classes: list[str] = field(default_factory=list)

    def dataset_to_model(self) -> dict[int, int]:
        """dataset category id -> model label index (the first, should two labels share a name)."""
        inverse: dict[int, int] = {}
        for index, category_id in sorted(self.model_to_dataset.items()):
            inverse.setdefault(category_id, index)
        return inverse


def _categories(categories: Sequence[Mapping] | Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    pairs = []
    for category in categories:
        if isinstance(category, Mapping):
            pairs.append((int(category["id"]), str(category["name"])))
        else:
            category_id, name = category
            pairs.append((int(category_id), str(name)))
    return pairs


def map_labels(model_labels: Sequence[str], categories: Sequence[Mapping] | Sequence[tuple[int, str]]) -> LabelMapping:
    """Match model labels (index = output class) to dataset categories ({"id", "name"} or (id, name)) by name.

    When two dataset categories share a key, the first listed wins and the other is reported unmatched."""
    pairs = _categories(categories)
    by_key: dict[str, int] = {}
    for category_id, name in pairs:
        key = label_key(name)
        if key:
            by_key.setdefault(key, category_id)
    mapping = LabelMapping()
    for index, label in enumerate(model_labels):
        category_id = by_key.get(label_key(label))
        if category_id is None:
            mapping.unmatched_model_labels.append(str(label))
        else:
            mapping.model_to_dataset[index] = category_id
    used = set(mapping.model_to_dataset.values())
    mapping.unmatched_dataset_classes = [
        name for category_id, name in pairs
        if category_id not in used or by_key.get(label_key(name)) != category_id]
    return mapping


def require_label_mapping(model_labels: Sequence[str],
                          categories: Sequence[Mapping] | Sequence[tuple[int, str]]) -> LabelMapping:
    """map_labels, or FailedPrecondition when not one name is shared."""
    mapping = map_labels(model_labels, categories)
    if not mapping.model_to_dataset:
        names = [name for _, name in _categories(categories)]
        raise FailedPrecondition(
            "the dataset's classes share no name with the model's labels: dataset "
            f"{_sample(names)}, model {_sample(list(model_labels))}", field="dataset", reason="LABELS_DISJOINT")
    return mapping


def model_labels_from_info(model_info: Mapping[str, str]) -> list[str]:
    """Label names of a model_info: our exact label_names (JSON) when present, else Model API's labels."""
    if model_info.get("label_names"):
        try:
            names = json.loads(model_info["label_names"])
            if isinstance(names, list):
                return [str(n) for n in names]
        except ValueError:
            pass
    return model_info.get("labels", "").split()


def _sample(names: list[str], shown: int = 8) -> str:
    if not names:
        return "(none)"
    text = ", ".join(repr(n) for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
