"""Pictures of one image with two (or more) sets of boxes: parent vs optimized, or predictions vs annotations.

The picture is the image scaled so its longer side lies between MIN_SIDE and MAX_SIDE pixels (small images
are enlarged so that labels stay readable), under a legend strip naming each set, its colour, line style and
box count. Each box is labelled with its class name and, for predictions, its score: the first set's labels
sit above their boxes, the second set's below, so two boxes in the same place keep both labels readable.
The first set is drawn with solid lines, the second with dashed ones, further sets solid again. Colours are a
blue and an orange that colour-blind viewers tell apart too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from workbench_runtime.detection import Detections
from services.common.images import decode_image

MIN_SIDE, MAX_SIDE = 640, 1280
FONT = cv2.FONT_HERSHEY_SIMPLEX
BLUE, ORANGE, GREEN, MAGENTA = (230, 140, 20), (0, 130, 255), (60, 190, 60), (200, 60, 200)  # BGR
COLORS = (BLUE, ORANGE, GREEN, MAGENTA)
_LEGEND_BACKGROUND, _LEGEND_TEXT = (36, 36, 36), (235, 235, 235)


@dataclass(frozen=True)
class BoxSet:
    name: str  # the legend's text: "parent (FP32)", "optimized (INT8)", "annotations"
    detections: Detections
    color: tuple[int, int, int] | None = None  # BGR; None: the palette's next colour
    show_scores: bool = True  # False for annotations, whose scores mean nothing
    dashed: bool | None = None  # None: the second set dashed, the others solid


def render_boxes(image: np.ndarray | str | Path, sets: Sequence[BoxSet], *, label_names: Sequence[str] = (),
                 title: str = "", min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> bytes:
    """A PNG of the image (BGR pixels or a file) with every set's boxes (original-image pixels) drawn."""
    pixels = decode_image(Path(image), field="image") if isinstance(image, (str, Path)) else image
    height, width = pixels.shape[:2]
    longest = max(height, width)
    scale = min_side / longest if longest < min_side else (max_side / longest if longest > max_side else 1.0)
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.ascontiguousarray(pixels.copy())
    font_scale = float(np.clip(max(canvas.shape[:2]) / 1300, 0.45, 0.8))
    thickness = max(2, round(max(canvas.shape[:2]) / 500))
    colors = [s.color or COLORS[i % len(COLORS)] for i, s in enumerate(sets)]
    dashed = [s.dashed if s.dashed is not None else i == 1 for i, s in enumerate(sets)]

    placed: list[tuple[int, int, int, int]] = []  # label rectangles already drawn, to step around
    for index, box_set in enumerate(sets):
        found = box_set.detections
        order = np.argsort(-found.scores, kind="stable")
        for i in order[::-1]:  # lowest score first: the best boxes end on top
            x1, y1, x2, y2 = (float(v) * scale for v in found.boxes[i])
            p1 = (int(round(x1)), int(round(y1)))
            p2 = (int(round(x2)), int(round(y2)))
            _rectangle(canvas, p1, p2, colors[index], thickness, dashed[index])
        for i in order:
            x1, y1, x2, y2 = (float(v) * scale for v in found.boxes[i])
            label = int(found.labels[i])
            text = label_names[label] if 0 <= label < len(label_names) else str(label)
            if box_set.show_scores:
                text += f" {float(found.scores[i]):.2f}"
            _label(canvas, text, int(round(x1)), int(round(y2)) if index % 2 else int(round(y1)), colors[index],
                   font_scale, below=bool(index % 2), placed=placed)

    legend = _legend(canvas.shape[1], sets, colors, dashed, title, font_scale, thickness)
    ok, png = cv2.imencode(".png", np.concatenate([legend, canvas]))
    if not ok:  # pragma: no cover - encoding a uint8 BGR canvas does not fail
        raise RuntimeError("PNG encoding failed")
    return png.tobytes()


def render_comparison(image: np.ndarray | str | Path, parent: Detections, optimized: Detections, *,
                      label_names: Sequence[str] = (), threshold: float = 0.0, parent_name: str = "parent model",
                      optimized_name: str = "optimized model", title: str = "") -> bytes:
    """Parent (blue, solid, labels above) and optimized (orange, dashed, labels below) predictions with
    score >= threshold."""
    return render_boxes(image, [BoxSet(parent_name, parent.above(threshold), BLUE),
                                BoxSet(optimized_name, optimized.above(threshold), ORANGE)],
                        label_names=label_names, title=title)


def render_predictions(image: np.ndarray | str | Path, predictions: Detections, annotations: Detections, *,
                       label_names: Sequence[str] = (), threshold: float = 0.0, title: str = "") -> bytes:
    """Annotations (green, solid, no scores, labels above) and predictions with score >= threshold (orange,
    dashed, labels below)."""
    return render_boxes(image, [BoxSet("annotations", annotations, GREEN, show_scores=False),
                                BoxSet("predictions", predictions.above(threshold), ORANGE, dashed=True)],
                        label_names=label_names, title=title)


def _rectangle(canvas, p1, p2, color, thickness, dashed) -> None:
    if not dashed:
        cv2.rectangle(canvas, p1, p2, color, thickness, cv2.LINE_AA)
        return
    dash = max(6, 4 * thickness)
    (x1, y1), (x2, y2) = p1, p2
    for a, b in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        steps = max(1, length // dash)
        for k in range(0, steps, 2):
            s, e = k / steps, min(1.0, (k + 1) / steps)
            start = (round(a[0] + (b[0] - a[0]) * s), round(a[1] + (b[1] - a[1]) * s))
            end = (round(a[0] + (b[0] - a[0]) * e), round(a[1] + (b[1] - a[1]) * e))
            cv2.line(canvas, start, end, color, thickness, cv2.LINE_AA)


def _text_color(color) -> tuple[int, int, int]:
    luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label(canvas, text, x, y, color, font_scale, *, below: bool, placed: list) -> None:
    """A filled tag with the text, above y (or below it), moved off the labels already placed."""
    (tw, th), base = cv2.getTextSize(text, FONT, font_scale, 1)
    w, h = tw + 6, th + base + 4
    height, width = canvas.shape[:2]
    x = max(0, min(x, width - w))
    top = y if below else y - h
    step = h if below else -h
    for _ in range(6):
        if top < 0 or top + h > height:  # off the canvas: the other side of the edge
            step = -step
            top = max(0, min(top, height - h))
        rect = (x, top, x + w, top + h)
        if not any(_overlaps(rect, other) for other in placed):
            break
        top += step
    placed.append((x, top, x + w, top + h))
    cv2.rectangle(canvas, (x, top), (x + w, top + h), color, -1)
    cv2.putText(canvas, text, (x + 3, top + th + 2), FONT, font_scale, _text_color(color), 1, cv2.LINE_AA)


def _legend(width: int, sets: Sequence[BoxSet], colors, dashed, title: str, font_scale: float,
            thickness: int) -> np.ndarray:
    (_, th), base = cv2.getTextSize("Ag", FONT, font_scale, 1)
    line = th + base + 10
    entries = []
    for box_set, color, is_dashed in zip(sets, colors, dashed):
        count = len(box_set.detections)
        entries.append((f"{box_set.name} ({count} box{'' if count == 1 else 'es'})", color, is_dashed))
    # lay entries out left to right, wrapping onto more lines when the strip is too narrow
    rows: list[list] = [[]]
    x = 8
    swatch = 3 * line // 2
    for text, color, is_dashed in entries:
        need = swatch + 6 + cv2.getTextSize(text, FONT, font_scale, 1)[0][0] + 18
        if rows[-1] and x + need > width:
            rows.append([])
            x = 8
        rows[-1].append((x, text, color, is_dashed))
        x += need
    lines = len(rows) + (1 if title else 0)
    strip = np.full((lines * line + 6, width, 3), _LEGEND_BACKGROUND, np.uint8)
    y = 3
    if title:
        cv2.putText(strip, _fit(title, width - 16, font_scale), (8, y + th + 4), FONT, font_scale, _LEGEND_TEXT, 1,
                    cv2.LINE_AA)
        y += line
    for row in rows:
        for x, text, color, is_dashed in row:
            middle = y + line // 2
            _rectangle(strip, (x, middle - line // 4), (x + swatch, middle + line // 4), color, thickness,
                       is_dashed)
            cv2.putText(strip, text, (x + swatch + 6, y + th + 4), FONT, font_scale, _LEGEND_TEXT, 1, cv2.LINE_AA)
        y += line
    return strip


def _fit(text: str, width: int, font_scale: float) -> str:
    if cv2.getTextSize(text, FONT, font_scale, 1)[0][0] <= width:
        return text
    while len(text) > 1 and cv2.getTextSize(text + "...", FONT, font_scale, 1)[0][0] > width:
        text = text[:-1]
    return text + "..."
