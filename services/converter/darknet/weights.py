"""Darknet .weights files: the header, the size check against a cfg, reading values a layer at a time, writing.

Layout: major, minor, revision as int32, then "seen" as int64 when (major*10+minor) >= 2 and major < 1000
and minor < 1000, else as int32; then float32 values, for each [convolutional] in cfg order: biases,
[scales, rolling_mean, rolling_var when batch_normalize=1], weights (O, I/groups, k, k). Weights are read
one layer at a time from the file, so memory holds the built model and one layer.

Domain code: failures raise workbench_runtime.errors.InvalidArgument, never gRPC errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from workbench_runtime.errors import InvalidArgument
from services.converter.darknet.network import DarknetNetwork


@dataclass(frozen=True)
class WeightsHeader:
    major: int
    minor: int
    revision: int
    seen: int
    size: int  # bytes: 20 with a 64-bit "seen", 16 with a 32-bit one

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}.{self.revision}"


def seen_is_int64(major: int, minor: int) -> bool:
    return (major * 10 + minor) >= 2 and major < 1000 and minor < 1000


def read_weights_header(f: BinaryIO, file_size: int) -> WeightsHeader:
    if file_size < 12:
        raise InvalidArgument(f"truncated weights: the file is {file_size} bytes, shorter than a Darknet header",
                              field="weights", reason="DARKNET_WEIGHTS_SIZE")
    major, minor, revision = (int(v) for v in np.frombuffer(f.read(12), dtype="<i4"))
    wide = seen_is_int64(major, minor)
    size = 20 if wide else 16
    if file_size < size:
        raise InvalidArgument(f"truncated weights: the file is {file_size} bytes, shorter than its {size}-byte header",
                              field="weights", reason="DARKNET_WEIGHTS_SIZE")
    seen = int(np.frombuffer(f.read(size - 12), dtype="<i8" if wide else "<i4")[0])
    return WeightsHeader(major, minor, revision, seen, size)


def check_weights_size(network: DarknetNetwork, header: WeightsHeader, file_size: int) -> None:
    expected = header.size + 4 * network.weight_count
    if file_size == expected:
        return
    problem = "truncated weights" if file_size < expected else "over-long weights"
    message = (f"{problem}: expected {expected} bytes of weights for this cfg ({header.size}-byte header, version "
               f"{header.version}, + {network.weight_count} float32 values), got {file_size}")
    other = (16 if header.size == 20 else 20) + 4 * network.weight_count
    if file_size == other:
        message += (f"; the size would fit a header whose 'seen' is {'32' if header.size == 20 else '64'}-bit, "
                    "but version " + header.version + " says otherwise")
    else:
        message += "; the weights were trained for another cfg (check classes=, filters= and the layer list)"
    raise InvalidArgument(message, field="weights", reason="DARKNET_WEIGHTS_SIZE")


@contextmanager
def open_weights(path: str | os.PathLike, network: DarknetNetwork) -> Iterator[tuple[WeightsHeader, WeightStream]]:
    """The weights file for network, its header read and its size checked, positioned at the first value."""
    path = Path(path)
    try:
        file_size = path.stat().st_size
        f = path.open("rb")
    except OSError as error:
        raise InvalidArgument(f"cannot read the weights: {error.strerror}", field="weights",
                              reason="DARKNET_WEIGHTS_READ") from None
    with f:
        header = read_weights_header(f, file_size)
        check_weights_size(network, header, file_size)
        yield header, WeightStream(f)


class WeightStream:
    """Reads a layer's float32 values at a time from an open weights file."""

    def __init__(self, f: BinaryIO):
        self._f = f

    def take(self, count: int, what: str) -> np.ndarray:
        values = np.fromfile(self._f, dtype="<f4", count=count)
        if values.size != count:  # the size check makes this unreachable unless the file changes under us
            raise InvalidArgument(f"truncated weights while reading {what}", field="weights",
                                  reason="DARKNET_WEIGHTS_SIZE")
        return values.astype(np.float32, copy=False)


def write_header(f: BinaryIO, version: tuple[int, int, int], seen: int = 0) -> None:
    """The header, its "seen" as wide as the version implies."""
    major, minor, revision = version
    np.array([major, minor, revision], dtype="<i4").tofile(f)
    np.array([seen], dtype="<i8" if seen_is_int64(major, minor) else "<i4").tofile(f)


def write_weights(path: str | os.PathLike, values: np.ndarray | list[np.ndarray], *,
                  version: tuple[int, int, int] = (0, 2, 0), seen: int = 0) -> None:
    """Write a Darknet weights file: header in the width its version implies, then float32 values."""
    with open(path, "wb") as f:
        write_header(f, version, seen)
        for chunk in values if isinstance(values, list) else [values]:
            np.asarray(chunk, dtype="<f4").tofile(f)
