"""OpenCV 4 beside the venv's OpenCV 5, for tests that need its Darknet reader (OpenCV 5 dropped it).

The wheel is fetched once with pip into the workbench cache and unpacked there; scripts run in a subprocess
with PYTHONPATH pointing at it, so the two OpenCVs never meet in one interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from services import reference_models

OPENCV4 = "opencv-python-headless==4.14.0.94"


def opencv4_site() -> Path:
    """A folder holding OpenCV 4's cv2 package (from its wheel, fetched once into the workbench cache)."""
    folder = reference_models.default_cache() / "opencv4-darknet"
    site = folder / "site"
    if (site / "cv2" / "__init__.py").exists():
        return site
    folder.mkdir(parents=True, exist_ok=True)
    wheels = list(folder.glob("opencv_python_headless-4.*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", OPENCV4, "-d", str(folder)],
                       check=True)
        wheels = list(folder.glob("opencv_python_headless-4.*.whl"))
    tmp = folder / f"site.tmp{os.getpid()}"
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(tmp)
    try:
        tmp.rename(site)
    except OSError:  # another process unpacked it first
        if not (site / "cv2" / "__init__.py").exists():
            raise
    return site


def run_opencv4(script: Path | str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run a Python script with OpenCV 4 importable as cv2; raises on a non-zero exit."""
    env = dict(os.environ, PYTHONPATH=str(opencv4_site()))
    return subprocess.run([sys.executable, str(script), *args], env=env, check=True, timeout=timeout,
                          capture_output=True, text=True)
