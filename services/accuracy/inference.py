"""A detector over a set of images: per-image Detections, and their COCO results JSON form.

`evaluate` keeps the runtime busy: an AsyncInferQueue of twice the device's optimal number of requests
(THROUGHPUT hint), a small thread pool reading and preprocessing the next images while the current
ones infer (at most `window` images ahead, so memory stays bounded on any dataset size). A request's
outputs are decoded in the calling thread when the request comes back idle, before it takes the next
image. No Python completion callback is set: OpenVINO would run it on the CPU plugin's stream threads,
and when such a callback drops the last reference to the compiled model (evaluate returning while the
callback still unwinds) the stream executor's destructor joins its own thread and aborts the process
("Resource deadlock avoided"); that happened here in about one run of three.
Progress goes to `report(stage, fraction, message, **metrics)` from the calling thread only, so a
report that raises (services.common.progress's Cancelled) stops the work cleanly.

COCO results ({image_id, category_id, bbox [x, y, w, h], score}) carry dataset category ids; model label
indices map to them with a services.common.labels.LabelMapping or a plain {label index: category id}.
Labels without a category are left out, as are categories without a label on the way back.
"""

from __future__ import annotations

import collections
import io
import json
import time
import zipfile
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints

from workbench_runtime.detection import Decoder, Detections
from workbench_runtime.errors import FailedPrecondition, InvalidArgument
from services.common.labels import LabelMapping
from services.common.openvino_errors import reason
from services.common.tensor_cache import ImageSource, StoredImage, TensorCache, load_input
from workbench_runtime.preprocess import Preprocessing

ImageId = Hashable
Report = Callable[..., None]
STAGE = "evaluate"
REPORT_EVERY_S = 0.5
PRECISIONS = {"f32": ov.Type.f32, "fp32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16, "fp16": ov.Type.f16}


def _no_report(*args, **kwargs) -> None:
    pass


def evaluate(model: ov.Model, images: Iterable[tuple[ImageId, ImageSource]], decoder: Decoder,
             preprocessing: Preprocessing, *, device: str = "CPU", precision_hint: str | None = None,
             report: Report = _no_report, core: ov.Core | None = None, properties: Mapping | None = None,
             workers: int | None = None, window: int | None = None,
             cache: TensorCache | None = None) -> dict[ImageId, Detections]:
    """Detections of every (image_id, source), in original-image pixels clipped to the image. A source is an image
    file's path or a StoredImage, fetched by the reading threads only when the cache does not hold its tensor.

    precision_hint: "f32", "bf16" or "f16" (INFERENCE_PRECISION_HINT); None leaves the device's default
    (bf16 on CPUs with AMX/avx512_bf16). properties: more compile properties. workers: reading threads
    (default: 2); window: images read ahead of inference (default: 2 per request, at least 4).
    cache: a services.common.tensor_cache.TensorCache: each picture is decoded and preprocessed once per
    (content, preprocessing) and read back by later evaluations, bit-identical; None decodes every time.
    The result lists the images in the order given (so stored predictions do not depend on which request
    finished first). An unreadable image raises InvalidArgument naming it (field "dataset"). The last report's metrics:
    images_per_second and seconds (from the first image on), compile_seconds."""
    total = len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]
    core = core or ov.Core()
    config: dict = {hints.performance_mode: hints.PerformanceMode.THROUGHPUT}
    if precision_hint:
        if precision_hint.lower() not in PRECISIONS:
            raise InvalidArgument(f"unknown precision {precision_hint!r} (f32, bf16 or f16)", field="precision")
        config[hints.inference_precision] = PRECISIONS[precision_hint.lower()]
    config.update(properties or {})
    report(STAGE, 0.0, f"compiling for {device}")
    compile_started = time.perf_counter()
    try:
        compiled = core.compile_model(model, device, config)
    except RuntimeError as exc:
        raise FailedPrecondition(f"{device} cannot compile the model: {reason(exc)}",
                                 field="device") from None
    names = {name for port in compiled.outputs for name in port.get_names()}
    missing = [name for name in decoder.output_names if name not in names]
    if missing:
        raise FailedPrecondition(f"the decoder reads outputs {missing} the model does not have", field="model")
    ports = [compiled.output(name) for name in decoder.output_names]
    compile_s = time.perf_counter() - compile_started
    # twice the runtime's optimal number: while this thread decodes one stream's finished request, that
    # stream already runs the next one queued behind it (with one request per stream it would sit idle)
    requests = 2 * int(compiled.get_property(props.optimal_number_of_infer_requests))
    queue = ov.AsyncInferQueue(compiled, requests)

    results: dict[ImageId, Detections] = {}
    # what each request holds: (image_id, transform, size, input) of an inference not yet decoded, or None;
    # the input array lives here while the request reads it in place (share_inputs)
    holding: list[tuple | None] = [None] * requests

    def collect(index: int) -> None:
        """Decode request index's finished inference while its output tensors are still its own."""
        image_id, transform, size, _ = holding[index]
        holding[index] = None
        request = queue[index]
        outputs = {name: request.get_tensor(port).data for name, port in zip(decoder.output_names, ports)}
        results[image_id] = decoder(outputs, transform, size)

    def load(image_id: ImageId, source: ImageSource) -> tuple:
        shown = source.name if isinstance(source, StoredImage) else Path(source).name
        tensor, transform, size = load_input(source, preprocessing, cache, name=f"image {image_id} ({shown})",
                                             field="dataset")
        return tensor[None], transform, size

    workers = workers or 2
    window = window or max(4, 2 * requests)
    seen: dict = {}  # image ids in the order given: the order of the results
    pending: collections.deque[tuple[ImageId, Future]] = collections.deque()
    started = last_report = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evaluate-read")
    try:
        source = iter(images)
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                try:
                    image_id, image = next(source)
                except StopIteration:
                    exhausted = True
                    break
                if image_id in seen:
                    raise InvalidArgument(f"image id {image_id!r} is listed twice", field="dataset")
                seen[image_id] = None
                pending.append((image_id, pool.submit(load, image_id, image)))
            if not pending:
                break
            image_id, future = pending.popleft()
            tensor, transform, size = future.result()
            idle = queue.get_idle_request_id()  # waits for a request to finish
            if holding[idle] is not None:
                collect(idle)
            holding[idle] = (image_id, transform, size, tensor)
            queue.start_async({0: tensor}, share_inputs=True)  # takes that same idle request
            now = time.perf_counter()
            if now - last_report >= REPORT_EVERY_S:
                last_report = now
                report(STAGE, len(results) / total if total else None, _progress(len(results), total),
                       images_per_second=len(results) / (now - started))
        queue.wait_all()
        for index in range(requests):
            if holding[index] is not None:
                collect(index)
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        queue.wait_all()
    elapsed = time.perf_counter() - started
    report(STAGE, 1.0, _progress(len(results), total), images_per_second=len(results) / max(elapsed, 1e-9),
           compile_seconds=compile_s, seconds=elapsed)
    return {image_id: results[image_id] for image_id in seen}  # in the images' order, not completion order


def _progress(finished: int, total: int | None) -> str:
    return f"{finished} of {total} images" if total is not None else f"{finished} images"


# --------------------------------------------------------------------------------------------- COCO JSON


def _label_to_category(mapping: LabelMapping | Mapping[int, int]) -> dict[int, int]:
    return dict(mapping.model_to_dataset) if isinstance(mapping, LabelMapping) else {int(k): int(v)
                                                                                     for k, v in mapping.items()}


def to_coco_results(predictions: Mapping[ImageId, Detections], mapping: LabelMapping | Mapping[int, int], *,
                    min_score: float = 0.0, decimals: int | None = 3) -> list[dict]:
    """COCO results: one {image_id, category_id, bbox [x, y, w, h], score} per detection with score >= min_score
    whose label maps to a category; by image (in the mapping's order), then descending score.
    decimals: rounding of the box coordinates (None keeps float32 values); scores are kept to 6 digits.
    The values are Python's round() of each number, made a whole image at a time (an evaluation has tens of
    thousands of detections, and this runs for the stored predictions and again for the metrics)."""
    to_category = _label_to_category(mapping)
    results = []
    for image_id, found in predictions.items():
        categories = [to_category.get(label) for label in found.labels.tolist()]
        keep = [i for i, (category, score) in enumerate(zip(categories, found.scores.tolist()))
                if category is not None and score >= min_score]
        if not keep:
            continue
        boxes = found.boxes[keep].astype(np.float64)
        xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        if decimals is None:
            bboxes = xywh.tolist()
        else:
            flat = _rounded(xywh, decimals)
            bboxes = [flat[i:i + 4] for i in range(0, len(flat), 4)]
        scores = _rounded(found.scores[keep].astype(np.float64), 6)
        results.extend({"image_id": image_id, "category_id": categories[i], "bbox": bbox, "score": score}
                       for i, bbox, score in zip(keep, bboxes, scores))
    return results


def _rounded(values: np.ndarray, decimals: int) -> list[float]:
    """Each number of values (flattened) as round(number, decimals) gives it, for values far below 2**53 / 10**decimals.

    rint(v * 10**d) / 10**d is that: the division is correctly rounded, as Python's round is, and the product's
    own rounding can only change which integer is nearest when v * 10**d lies within a hair of a half; those
    few go through round() itself."""
    flat = values.ravel()
    scaled = flat * 10.0 ** decimals
    out = (np.rint(scaled) / 10.0 ** decimals).tolist()
    for i in np.flatnonzero(np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6).tolist():
        out[i] = round(float(flat[i]), decimals)
    return out


def from_coco_results(results: Iterable[Mapping], mapping: LabelMapping | Mapping[int, int],
                      image_ids: Iterable[ImageId] = ()) -> dict[ImageId, Detections]:
    """Per-image Detections of COCO results (model label indices through the mapping, inverted); every id of
    image_ids gets an entry, empty when no result names it. Categories no label maps to are left out."""
    to_label = (mapping.dataset_to_model() if isinstance(mapping, LabelMapping)
                else {category: label for label, category in sorted(_label_to_category(mapping).items(),
                                                                     reverse=True)})
    rows: dict[ImageId, list] = {image_id: [] for image_id in image_ids}
    for result in results:
        label = to_label.get(int(result["category_id"]))
        if label is None:
            continue
        x, y, w, h = (float(v) for v in result["bbox"])
        rows.setdefault(result["image_id"], []).append((x, y, x + w, y + h, float(result["score"]), label))
    out = {}
    for image_id, found in rows.items():
        if not found:
            out[image_id] = Detections.empty()
            continue
        table = np.asarray(found, np.float64)
        out[image_id] = Detections(table[:, :4], table[:, 4], table[:, 5].astype(np.int64)).sorted()
    return out


def annotations_as_detections(ground_truth: Mapping, mapping: LabelMapping | Mapping[int, int], *,
                              include_crowd: bool = False) -> dict[ImageId, Detections]:
    """A COCO ground-truth dict's boxes as per-image Detections (score 1, model label indices), every image
    of its "images" present; for drawing annotations beside predictions. Crowd regions are left out unless asked."""
    annotations = [dict(a, score=1.0) for a in ground_truth.get("annotations", [])
                   if include_crowd or not a.get("iscrowd")]
    return from_coco_results(annotations, mapping, [image["id"] for image in ground_truth.get("images", [])])


# --------------------------------------------------------------------------------------------- storage


def predictions_to_bytes(predictions: Mapping[ImageId, Detections]) -> bytes:
    """Per-image Detections (model labels, every image kept, empty ones too) as a compact .npz, for the store.
    Image ids must be JSON numbers or strings."""
    ids = list(predictions)
    counts = np.array([len(predictions[i]) for i in ids], np.int64)
    empty = Detections.empty()
    parts = [predictions[i] for i in ids] or [empty]
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, image_ids=np.frombuffer(json.dumps(ids).encode(), np.uint8), counts=counts,
        boxes=np.concatenate([d.boxes for d in parts]), scores=np.concatenate([d.scores for d in parts]),
        labels=np.concatenate([d.labels for d in parts]).astype(np.int32))
    return buffer.getvalue()


def predictions_from_bytes(data: bytes) -> dict[ImageId, Detections]:
    """The inverse of predictions_to_bytes; InvalidArgument when the bytes are not such a file."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            ids = json.loads(stored["image_ids"].tobytes().decode())
            counts, boxes, scores, labels = (stored[k] for k in ("counts", "boxes", "scores", "labels"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise InvalidArgument(f"stored predictions are damaged: {exc}", field="predictions") from None
    if len(ids) != len(counts) or int(counts.sum()) > len(scores):
        raise InvalidArgument("stored predictions are damaged: counts do not add up", field="predictions")
    ends = np.cumsum(counts)
    return {image_id: Detections(boxes[end - n:end], scores[end - n:end], labels[end - n:end])
            for image_id, n, end in zip(ids, counts.tolist(), ends.tolist())}
