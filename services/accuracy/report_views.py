"""Views of a stored evaluation report: a page of its comparison rows, and one image's boxes as a picture
(parent vs optimized, or predictions vs the dataset's annotations), stored beside the dataset."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from services.accuracy.evaluation_runs import identity
from services.accuracy.inference import annotations_as_detections, from_coco_results
from services.accuracy.render import BLUE, GREEN, ORANGE, BoxSet, render_boxes
from services.common.dataset_files import StoredDataset, download_images
from workbench_runtime.errors import FailedPrecondition, NotFound
from services.common.labels import require_label_mapping
from services.common.metrics import ClassComparison, ImageComparison, RowPage, query_rows
from services.common.object_store import ObjectRef, ObjectStore

# where a set of boxes comes from -> its legend name and colour; any other source draws as "predictions"
SOURCES = {"parent": ("parent model", BLUE), "optimized": ("optimized model", ORANGE),
           "annotations": ("annotations", GREEN)}
DEFAULT_SCORE_THRESHOLD = 0.25


def comparison_page(store: ObjectStore, rows: ObjectRef, *, per_class: bool, order_by: str = "",
                    only_differences: bool = False, class_name: str | None = None, page_size: int = 0,
                    page_token: str = "") -> RowPage:
    """One page of the stored comparison rows: per image (ImageComparison), or per image and class
    (ClassComparison) when per_class; sorting, filtering and paging as services.common.metrics.query_rows."""
    doc = store.get_json(rows.bucket, rows.key, max_bytes=1024**3)
    stored = [ClassComparison(**r) for r in doc["classes"]] if per_class else [ImageComparison(**r)
                                                                               for r in doc["images"]]
    return query_rows(stored, order_by=order_by, only_differences=only_differences, class_name=class_name,
                      page_size=page_size, page_token=page_token)


def render_image(store: ObjectStore, dataset: StoredDataset, image_id: int,
                 sides: list[tuple[ObjectRef | None, str]], *, score_threshold: float = 0.0,
                 bucket: str) -> ObjectRef:
    """A PNG of dataset image image_id with up to two sets of boxes, stored in bucket under the dataset's
    renders/ (named by content). sides: (stored predictions or None, source) per set, source a key of
    SOURCES; a side without predictions is drawn only when its source is "annotations". score_threshold:
    predictions below it are not drawn (0: DEFAULT_SCORE_THRESHOLD)."""
    entry = next((e for e in dataset.manifest(store)["images"] if e["id"] == image_id), None)
    if entry is None:
        raise NotFound(f"the dataset has no image {image_id}", field="image_id")
    with tempfile.TemporaryDirectory(prefix="render-") as tmp:
        (_, path), = download_images(store, dataset, [entry], Path(tmp))
        sides = [(ref, source) for ref, source in sides if ref is not None or source == "annotations"]
        docs = {ref.key: store.get_json(ref.bucket, ref.key, max_bytes=1024**3) for ref, _ in sides if ref is not None}
        labels = next((doc["labels"] for doc in docs.values()), [])
        sets = []
        for ref, source in sides:
            name, color = SOURCES.get(source, ("predictions", ORANGE))
            if source == "annotations":
                annotations = dataset.annotations(store)
                if not annotations:
                    raise FailedPrecondition("the dataset has no annotations to draw", field="against_annotations")
                mapping = require_label_mapping(labels, annotations["categories"])
                sets.append(BoxSet(name, annotations_as_detections(annotations, mapping)[image_id], color,
                                   show_scores=False))
            else:
                doc = docs[ref.key]
                found = from_coco_results(doc["results"], identity(doc["labels"]), [image_id])[image_id]
                sets.append(BoxSet(name, found.above(score_threshold or DEFAULT_SCORE_THRESHOLD), color))
        png = render_boxes(path, sets, label_names=labels, title=entry.get("original_name") or entry["file_name"])
    # named by content: two different pictures of one image (other reports, other sets) never share a key
    digest = hashlib.sha256(png).hexdigest()[:16]
    return store.put_bytes(bucket, f"{dataset.prefix}renders/{image_id}-{digest}.png", png)
