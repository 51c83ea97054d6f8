"""Untrusted image files: size from the header before any decoding, and a decode that explains failures.

`sniff_image` reads only the first bytes of a JPEG, PNG, BMP or WebP file and returns its format and
pixel size, so a decompression bomb (a few kilobytes that claim 100,000 x 100,000 pixels) is refused
before a single pixel is allocated. The format comes from the content, never from the file's name.

`decode_image` returns BGR uint8 pixels in the file's stored orientation (EXIF orientation is ignored,
so widths and heights agree with the header and with COCO's convention), or raises InvalidArgument
saying what is wrong with the file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench_runtime.errors import InvalidArgument

MAX_IMAGE_PIXELS = 50_000_000
# OpenCV's own guard (read once, at its first decode): our header check comes first; this backs it up.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

import cv2  # noqa: E402  (after the environment it reads)

# the canonical suffix of each format we accept
SUFFIXES = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "webp": ".webp"}
# names that announce an image; content decides whether it is one
IMAGE_NAME_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp")
HEADER_BYTES = 64 * 1024  # a JPEG's SOF may follow large EXIF/ICC segments; beyond this we read the file
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg" | "png" | "bmp" | "webp"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.format]


def tune_allocator_for_images(mmap_threshold: int = 32 * 1024**2, trim_threshold: int = 128 * 1024**2) -> bool:
    """Let glibc reuse freed pixel buffers instead of mapping fresh pages for every decode.

    By default each decoded picture of a few MB comes from a new mmap (or a heap trimmed just before)
    and costs hundreds of page faults: on the 768x576 JPEGs of bench/dataset_import.py a third of the
    decode time is kernel time. With fixed thresholds the buffers are reused; the cost is freed memory
    that stays with the process (up to trim_threshold per arena). Process-wide: call it once at the
    start of a service that decodes many images (the same as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_
    in its environment). Returns False where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, int(mmap_threshold)) and mallopt(m_trim_threshold, int(trim_threshold)))


def looks_like_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_NAME_SUFFIXES)


def sniff_image(data: bytes | bytearray | memoryview) -> ImageHeader | None:
    """Format and size from the first bytes; None when they are no JPEG/PNG/BMP/WebP we can size.

    JPEGs may need more than HEADER_BYTES (big EXIF segments before the frame header): pass the
    whole file then, as read_image_header does."""
    if not isinstance(data, bytes):
        data = bytes(data)
    try:
        if data[:3] == b"\xff\xd8\xff":
            return _jpeg(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _png(data)
        if data[:2] == b"BM":
            return _bmp(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
    except (struct.error, IndexError):
        return None
    return None


def _jpeg(data: bytes) -> ImageHeader | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None  # markers must follow one another in the header
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if length < 2:
            return None
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return ImageHeader("jpeg", width, height) if width and height else None
        i += 2 + length
    return None


def _png(data: bytes) -> ImageHeader | None:
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return ImageHeader("png", width, height) if width and height else None


def _bmp(data: bytes) -> ImageHeader | None:
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:  # BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    elif dib >= 40:
        width, height = struct.unpack("<ii", data[18:26])
        height = abs(height)  # negative: rows stored top-down
    else:
        return None
    return ImageHeader("bmp", width, height) if width > 0 and height > 0 else None


def _webp(data: bytes) -> ImageHeader | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: frame tag (3), start code 9d 01 2a, then 14-bit sizes
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", data[26:30])
        width, height = width & 0x3FFF, height & 0x3FFF
    elif chunk == b"VP8L":  # lossless: signature 0x2f, then 14-bit width-1 and height-1
        if data[20] != 0x2F:
            return None
        (bits,) = struct.unpack("<I", data[21:25])
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
    else:
        return None
    return ImageHeader("webp", width, height) if width and height else None


def read_image_header(path: Path | str) -> ImageHeader | None:
    """sniff_image on a file, reading more than HEADER_BYTES only for a JPEG whose frame header is further."""
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
        header = sniff_image(head)
        if header is None and head[:3] == b"\xff\xd8\xff" and len(head) == HEADER_BYTES:
            header = sniff_image(head + f.read())
    return header


def check_header(header: ImageHeader | None, name: str, *, max_pixels: int = MAX_IMAGE_PIXELS,
                 field: str = "image") -> ImageHeader:
    """The header, or InvalidArgument: not a supported image, or more pixels than max_pixels."""
    if header is None:
        raise InvalidArgument(f"{name} is not a JPEG, PNG, BMP or WebP image (or its header is damaged)",
                              field=field, reason="IMAGE_UNSUPPORTED")
    if header.pixels > max_pixels:
        raise InvalidArgument(
            f"{name} is {header.width}x{header.height} = {header.pixels / 1e6:.1f} megapixels, over the "
            f"{max_pixels / 1e6:g} megapixel limit (a decompression bomb?)", field=field, reason="IMAGE_TOO_LARGE")
    return header


def decode_image(source: Path | str | bytes | bytearray | memoryview, *, name: str | None = None,
                 max_pixels: int = MAX_IMAGE_PIXELS, field: str = "image") -> np.ndarray:
    """BGR uint8 pixels (H, W, 3) of a JPEG/PNG/BMP/WebP file or its bytes.

    Raises InvalidArgument naming the file: empty, not a supported image, too many pixels (checked from
    the header before decoding), or damaged (truncated or corrupt data)."""
    if isinstance(source, (str, Path)):
        name = name or Path(source).name
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"{name} cannot be read: {exc.strerror or exc}", field=field,
                                  reason="IMAGE_UNREADABLE") from None
    else:
        data = bytes(source)
    return decode_image_bytes(data, name=name or "the image", max_pixels=max_pixels, field=field)[1]


def decode_image_bytes(data: bytes, *, name: str, max_pixels: int = MAX_IMAGE_PIXELS,
                       field: str = "image") -> tuple[ImageHeader, np.ndarray]:
    """(header, pixels) of image bytes; see decode_image."""
    if not data:
        raise InvalidArgument(f"{name} is empty (0 bytes)", field=field, reason="IMAGE_EMPTY")
    header = check_header(sniff_image(data), name, max_pixels=max_pixels, field=field)
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    except cv2.error as exc:
        raise InvalidArgument(f"{name} is a damaged {header.format.upper()} image: {str(exc).strip()[:200]}",
                              field=field, reason="IMAGE_DAMAGED") from None
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InvalidArgument(f"{name} is a damaged {header.format.upper()} image (truncated or corrupt data)",
                              field=field, reason="IMAGE_DAMAGED")
    if pixels.shape[:2] != (header.height, header.width):
        raise InvalidArgument(
            f"{name}: its header says {header.width}x{header.height} but it decodes to "
            f"{pixels.shape[1]}x{pixels.shape[0]}", field=field, reason="IMAGE_DAMAGED")
    return header, pixels
