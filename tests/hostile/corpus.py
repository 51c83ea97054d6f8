"""A corpus of hostile and broken files, built at test time, with what the public API must do with each.

Every entry is one import through the gateway: model files with their roles, dataset files (loose or
one archive), or a raw upload whose header lies. Nothing is downloaded: each builder writes a few
small files (the largest are Darknet weights of yolov4-tiny's size, 24 MB of zeros) into the folder
it is given. Attacks aim at `Place.outside`, an existing empty folder outside any storage: archive
members escape into it, links point at it, and the pickles' payload creates `Place.marker` in it
when unpickled. After every import the folder must still be empty.

Expectations (`Expect`):
  REFUSED   the RPC itself fails with `code` and a message matching `pattern`;
  FAILED    the import job ends FAILED in `service`, its error matching `pattern`;
  IMPORTED  the job succeeds (broken items skipped), the dataset's warnings match `pattern` and every
            one of `warnings`, and `images` images were kept.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
import numpy as np

from workbench.v1 import common_pb2

REPO = Path(__file__).resolve().parents[2]
TINY_CFG = REPO / "data" / "darknet" / "yolov4-tiny.cfg"
IMAGES = REPO / "data" / "images"

MODEL, DATASET, UPLOAD = "model", "dataset", "upload"
REFUSED, FAILED, IMPORTED = "refused", "failed", "imported"

CFG = common_pb2.MODEL_FILE_ROLE_DARKNET_CFG
WEIGHTS = common_pb2.MODEL_FILE_ROLE_DARKNET_WEIGHTS
MODEL_FILE = common_pb2.MODEL_FILE_ROLE_MODEL
IR_XML, IR_BIN = common_pb2.MODEL_FILE_ROLE_IR_XML, common_pb2.MODEL_FILE_ROLE_IR_BIN
ARCHIVE = common_pb2.MODEL_FILE_ROLE_ARCHIVE
MARKER_NAME = "pwned"


@dataclass(frozen=True)
class Expect:
    outcome: str  # REFUSED | FAILED | IMPORTED
    pattern: str  # regex searched in the status message, the job's error, or the dataset's warnings
    code: grpc.StatusCode | None = None  # REFUSED
    service: str = ""  # FAILED: the job's failed_service
    warnings: tuple[str, ...] = ()  # IMPORTED: more patterns, each matching some warning
    images: int | None = None  # IMPORTED: images kept


@dataclass(frozen=True)
class Place:
    root: Path  # this entry's own folder, for the files it uploads
    outside: Path  # what attacks aim at; must stay empty

    @property
    def marker(self) -> Path:
        """The file the pickle payloads create when something unpickles them."""
        return self.outside / MARKER_NAME

    def path(self, name: str) -> Path:
        return self.root / name


@dataclass(frozen=True)
class Hostile:
    name: str
    target: str  # MODEL | DATASET | UPLOAD
    build: Callable[[Place], list]  # MODEL: [(role, path)]; DATASET: [path]; UPLOAD: [path]
    expect: Expect
    framework: int = common_pb2.FRAMEWORK_UNSPECIFIED
    dataset_format: int = common_pb2.DATASET_FORMAT_UNSPECIFIED
    upload_name: str = ""  # UPLOAD: the file_name the header claims
    declared_size: int | None = None  # UPLOAD: the size the header claims (None: the true size)

    def files(self, root: Path, outside: Path) -> list:
        folder = root / self.name
        folder.mkdir(parents=True, exist_ok=True)
        return self.build(Place(folder, outside))


# ---- payloads ----------------------------------------------------------------------------------------


class Payload:
    """Unpickling this opens (so creates) the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_bytes(marker: Path, protocol: int = 4) -> bytes:
    return pickle.dumps(Payload(marker), protocol=protocol)


def write_npy_payload(path: Path, marker: Path) -> Path:
    with path.open("wb") as f:
        np.save(f, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    return path


def torch_checkpoint_bytes(marker: Path) -> bytes:
    """The layout torch.save writes: a zip whose archive/data.pkl is the pickle."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("archive/data.pkl", pickle_bytes(marker, protocol=2))
        zf.writestr("archive/version", "3\n")
    return buffer.getvalue()


# ---- helpers -----------------------------------------------------------------------------------------


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def escape(outside: Path, name: str) -> str:
    """An archive member name that climbs out of any extraction folder into outside/name."""
    return "../" * 24 + outside.relative_to(outside.anchor).as_posix() + "/" + name


def junk(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def image(name: str = "dog.jpg") -> bytes:
    return (IMAGES / name).read_bytes()


def png_claiming(width: int, height: int) -> bytes:
    """A small, valid-looking PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1000)))
            + chunk(b"IEND", b""))


def zip_of(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def tar_of(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def tar_special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info


def zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o120777 << 16
    return info, target.encode()


# ---- Darknet -----------------------------------------------------------------------------------------


def tiny_cfg_text() -> str:
    return TINY_CFG.read_text()


def weight_count() -> int:
    from services.converter.darknet import expected_weight_count

    return expected_weight_count(TINY_CFG)


def weights_bytes(floats: int, version: tuple[int, int, int] = (0, 2, 5), seen_bytes: int | None = None) -> bytes:
    """A Darknet weights header (seen as int64 for version >= 0.2) and `floats` float32 zeros."""
    major, minor, revision = version
    if seen_bytes is None:
        seen_bytes = 8 if (major * 10 + minor) >= 2 else 4
    return struct.pack("<iii", major, minor, revision) + bytes(seen_bytes) + bytes(4 * floats)


def darknet(cfg: str | bytes | None, weights: bytes | None) -> Callable[[Place], list]:
    def build(place: Place) -> list:
        files = []
        if cfg is not None:
            files.append((CFG, write(place.path("yolov4-tiny.cfg"), cfg)))
        if weights is not None:
            files.append((WEIGHTS, write(place.path("yolov4-tiny.weights"), weights)))
        return files
    return build


def darknet_lazy(cfg: Callable[[], str | bytes], weights: Callable[[], bytes]) -> Callable[[Place], list]:
    return lambda place: darknet(cfg(), weights())(place)


def edited_cfg(pattern: str, replacement: str, count: int = 1) -> Callable[[], str]:
    def text() -> str:
        edited, n = re.subn(pattern, replacement, tiny_cfg_text(), count=count, flags=re.MULTILINE)
        assert n, f"{pattern!r} is not in {TINY_CFG}"
        return edited
    return text


def small_weights() -> bytes:
    return weights_bytes(1000)


def exact_weights() -> bytes:
    return weights_bytes(weight_count())


# ---- ONNX and IR -------------------------------------------------------------------------------------


def tiny_onnx_bytes() -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 3, 3, 3), 0.1, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["conv"], ["out"])],
        "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 16, 16])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_ir(place: Place) -> tuple[str, Path]:
    """(xml text, bin path) of a valid one-layer OpenVINO IR."""
    import openvino as ov
    import openvino.opset13 as ops

    parameter = ops.parameter([1, 3, 8, 8], np.float32, name="image")
    model = ov.Model([ops.result(ops.relu(parameter, name="act"))], [parameter], "tiny")
    xml = place.path("valid.xml")
    ov.save_model(model, str(xml))
    return xml.read_text(), xml.with_suffix(".bin")


def ir_with_doctype(doctype: str, entity: str) -> Callable[[Place], list]:
    def build(place: Place) -> list:
        text, bin_path = tiny_ir(place)
        head = '<?xml version="1.0"?>'
        assert text.startswith(head) and 'name="act"' in text
        text = text.replace(head, f"{head}\n{doctype}", 1).replace('name="act"', f'name="&{entity};"', 1)
        return [(IR_XML, write(place.path("model.xml"), text)), (IR_BIN, bin_path)]
    return build


BILLION_LAUGHS = ('<!DOCTYPE {root} [<!ENTITY a "ha">'
                  + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8)) + "]>")


def external_entity(target: str) -> str:
    return '<!DOCTYPE {root} [<!ENTITY x SYSTEM "file://' + target + '">]>'


# ---- datasets ----------------------------------------------------------------------------------------


def loose(files: dict[str, bytes | Callable[[Place], bytes]]) -> Callable[[Place], list]:
    def build(place: Place) -> list:
        return [write(place.path(name), data(place) if callable(data) else data) for name, data in files.items()]
    return build


def loose_images(**extra: bytes | Callable[[Place], bytes]) -> Callable[[Place], list]:
    """dog.jpg and eagle.jpg, then the extra files (name -> bytes)."""
    return lambda place: loose({"dog.jpg": image("dog.jpg"), "eagle.jpg": image("eagle.jpg"), **extra})(place)


def archive(kind: str, members: Callable[[Place], list]) -> Callable[[Place], list]:
    """One archive ("zip", "tar", "tar.gz") of a good image, then the members the builder returns."""
    def build(place: Place) -> list:
        items = [("images/dog.jpg", image("dog.jpg")), *members(place)]
        if kind == "zip":
            return [zip_of(place.path("dataset.zip"), items)]
        return [tar_of(place.path(f"dataset.{kind}"), items, "w:gz" if kind == "tar.gz" else "w")]
    return build


def coco(**overrides) -> dict:
    data = {
        "images": [{"id": 1, "file_name": "dog.jpg"}, {"id": 2, "file_name": "eagle.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 200, 200]},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 10, 50, 50]}],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "bird"}],
    }
    data.update(overrides)
    return data


def coco_set(data: dict | bytes) -> Callable[[Place], list]:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    return loose_images(**{"instances.json": body})


def coco_with_annotations(*annotations: dict) -> dict:
    return coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 200, 200]}, *annotations])


def voc_xml(body: str = "") -> str:
    return (f"<annotation><filename>dog.jpg</filename><size><width>768</width><height>576</height></size>"
            f"<object><name>dog</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>200</xmax><ymax>200</ymax>"
            f"</bndbox></object>{body}</annotation>")


# ---- the corpus --------------------------------------------------------------------------------------

_GB = 1024**3


def _failed(service: str, pattern: str) -> Expect:
    return Expect(FAILED, pattern, service=service)


def _imported(pattern: str, *warnings: str, images: int) -> Expect:
    return Expect(IMPORTED, pattern, warnings=warnings, images=images)


CORPUS: list[Hostile] = [
    # -- Darknet weights ---------------------------------------------------------------------------
    Hostile("darknet-weights-truncated", MODEL, darknet_lazy(tiny_cfg_text, small_weights),
            _failed("converter", r"truncated weights: expected \d+ bytes of weights for this cfg .* got 4020")),
    Hostile("darknet-weights-overlong", MODEL,
            darknet_lazy(tiny_cfg_text, lambda: weights_bytes(weight_count() + 257)),
            _failed("converter", r"over-long weights: expected \d+ bytes .* got \d+")),
    Hostile("darknet-weights-shorter-than-header", MODEL, darknet_lazy(tiny_cfg_text, lambda: b"\x00" * 8),
            _failed("converter", r"the file is 8 bytes, shorter than a Darknet header")),
    Hostile("darknet-weights-header-width-lies", MODEL,
            darknet_lazy(tiny_cfg_text, lambda: weights_bytes(weight_count(), version=(0, 1, 0), seen_bytes=8)),
            _failed("converter", r"over-long weights.*would fit a header whose 'seen' is 64-bit")),
    Hostile("darknet-weights-are-a-pickle", MODEL,
            lambda place: darknet(tiny_cfg_text(), pickle_bytes(place.marker))(place),
            _failed("converter", r"yolov4-tiny\.weights is a Python pickle, which runs code when loaded")),
    Hostile("darknet-cfg-without-weights", MODEL, darknet_lazy(tiny_cfg_text, lambda: None),
            _failed("converter", r"a Darknet model needs a cfg and a weights file")),
    # -- Darknet cfgs ------------------------------------------------------------------------------
    Hostile("darknet-cfg-unknown-layer", MODEL, darknet_lazy(edited_cfg(r"^\[maxpool\]", "[bogus]"), small_weights),
            _failed("converter", r"unknown layer type \[bogus\] at layer 9 .*line 93")),
    Hostile("darknet-cfg-without-net-section", MODEL, darknet_lazy(edited_cfg(r"^\[net\]\n", ""), small_weights),
            _failed("converter", r"cfg line 5: option 'batch=64' comes before any \[section\]")),
    Hostile("darknet-cfg-net-only", MODEL,
            darknet_lazy(lambda: tiny_cfg_text().split("[convolutional]")[0], small_weights),
            _failed("converter", r"the cfg has a \[net\] but no layers")),
    Hostile("darknet-cfg-empty", MODEL, darknet_lazy(lambda: b"", small_weights),
            _failed("converter", r"the cfg holds no sections")),
    Hostile("darknet-cfg-binary-junk", MODEL, darknet_lazy(lambda: junk(4096, seed=7), small_weights),
            _failed("converter", r"cfg line 1: expected key=value, got '")),
    # the message quotes the line: clipped, it still reaches the client (gRPC trailers stop at 16 KiB)
    Hostile("darknet-cfg-one-huge-line", MODEL, darknet_lazy(lambda: "[net]\n" + "A" * 200_000, small_weights),
            _failed("converter", r"cfg line 2: expected key=value, got 'A+ \.\.\.\(\d+ characters cut\)\.\.\. A+'$")),
    Hostile("darknet-cfg-width-1000000", MODEL,
            darknet_lazy(edited_cfg(r"^width=416$", "width=1000000"), exact_weights),
            _failed("converter", r"\[net\] \(cfg line 1\): width=1000000 height=416: the input may be at most 16384 "
                                 r"pixels a side")),
    Hostile("darknet-cfg-upsample-stride-100000", MODEL,
            darknet_lazy(edited_cfg(r"^\[upsample\]\nstride=2$", "[upsample]\nstride=100000"), small_weights),
            _failed("converter", r"layer 33 \[upsample\] \(cfg line 256\): its output 128x1300000x1300000 "
                                 r"holds \d+ values, more than the 2147483647 a layer may have")),
    Hostile("darknet-cfg-filters-minus-1", MODEL,
            darknet_lazy(edited_cfg(r"^filters=32$", "filters=-1"), small_weights),
            _failed("converter", r"layer 0 \[convolutional\] \(cfg line 34\): filters='-1' must be at least 1")),
    Hostile("darknet-cfg-kernel-100001", MODEL, darknet_lazy(edited_cfg(r"^size=3$", "size=100001"), small_weights),
            # padded ("pad=1") it fits; the refusal names the weights such a cfg would need
            _failed("converter", r"truncated weights: expected 3840101048204 bytes of weights for this cfg .*"
                                 r"\+ 960025262046 float32 values\), got 4020; .*check classes=, filters=")),
    Hostile("darknet-cfg-kernel-100001-unpadded", MODEL,
            darknet_lazy(edited_cfg(r"^size=3\nstride=2\npad=1$", "size=100001\nstride=2\npad=0"), small_weights),
            _failed("converter", r"layer 0 \[convolutional\] .*a 100001x100001 kernel does not fit its 416x416 input")),
    Hostile("darknet-cfg-route-to-nowhere", MODEL,
            darknet_lazy(edited_cfg(r"^layers = -4$", "layers = -100"), small_weights),
            _failed("converter", r"\[route\] .*layers= refers to layer -100 .*which does not exist")),
    Hostile("darknet-cfg-classes-do-not-match-filters", MODEL,
            darknet_lazy(edited_cfg(r"^classes=80$", "classes=81"), small_weights),
            _failed("converter", r"\[yolo\] .*needs 3 anchors x \(81 classes \+ 5\) = 258 channels")),
    # -- pickles and other formats that run code ---------------------------------------------------
    Hostile("pickle-pkl", MODEL,
            lambda place: [(MODEL_FILE, write(place.path("evil.pkl"), pickle_bytes(place.marker)))],
            _failed("converter", r"evil\.pkl is a Python pickle, which runs code when loaded")),
    Hostile("pickle-pt-checkpoint", MODEL,
            lambda place: [(MODEL_FILE, write(place.path("evil.pt"), torch_checkpoint_bytes(place.marker)))],
            _failed("converter", r"evil\.pt is a PyTorch pickle, which runs code when loaded")),
    Hostile("pickle-npy-allow-pickle", MODEL,
            lambda place: [(MODEL_FILE, write_npy_payload(place.path("evil.npy"), place.marker))],
            _failed("converter", r"evil\.npy is not a model of any supported framework")),
    Hostile("pickle-named-onnx", MODEL,
            lambda place: [(MODEL_FILE, write(place.path("model.onnx"), pickle_bytes(place.marker)))],
            _failed("converter", r"model\.onnx is a Python pickle, which runs code when loaded")),
    Hostile("pickle-protocol-0-named-onnx", MODEL,
            lambda place: [(MODEL_FILE, write(place.path("model.onnx"), pickle_bytes(place.marker, protocol=0)))],
            _failed("converter", r"model\.onnx is not a model of any supported framework \(or it is damaged\)")),
    Hostile("torch-checkpoint-named-onnx", MODEL,
            lambda place: [(MODEL_FILE, write(place.path("model.onnx"), torch_checkpoint_bytes(place.marker)))],
            _failed("converter", r"model\.onnx is a PyTorch checkpoint \(a pickle that runs code when loaded\)")),
    # -- ONNX and OpenVINO IR ----------------------------------------------------------------------
    Hostile("onnx-random-bytes", MODEL, lambda place: [(MODEL_FILE, write(place.path("model.onnx"), junk(4096, 11)))],
            _failed("converter", r"model\.onnx is not a model of any supported framework \(or it is damaged\)")),
    Hostile("onnx-truncated", MODEL,
            lambda place: [(MODEL_FILE, write(place.path("model.onnx"), tiny_onnx_bytes()[:200]))],
            _failed("converter", r"model\.onnx is not a model of any supported framework \(or it is damaged\)")),
    Hostile("onnx-empty", MODEL, lambda place: [(MODEL_FILE, write(place.path("model.onnx"), b""))],
            _failed("converter", r"model\.onnx is not a model of any supported framework \(or it is damaged\)")),
    Hostile("ir-xml-billion-laughs", MODEL, ir_with_doctype(BILLION_LAUGHS.format(root="net"), "i"),
            _failed("converter", r"the IR's \.xml declares a DTD or entities, which an OpenVINO IR never has")),
    Hostile("ir-xml-external-entity", MODEL,
            lambda place: ir_with_doctype(external_entity("/etc/passwd").format(root="net"), "x")(place),
            _failed("converter", r"the IR's \.xml declares a DTD or entities, which an OpenVINO IR never has")),
    Hostile("ir-xml-entity-as-the-model-file", MODEL,
            lambda place: [(MODEL_FILE, ir_with_doctype(BILLION_LAUGHS.format(root="net"), "i")(place)[0][1])],
            _failed("converter", r"the IR's \.xml declares a DTD or entities, which an OpenVINO IR never has")),
    Hostile("ir-xml-entity-in-a-model-archive", MODEL,
            lambda place: [(ARCHIVE, tar_of(place.path("model.tar"), [
                ("ir/model.xml", ir_with_doctype(external_entity("/etc/passwd").format(root="net"), "x")(place)[0][1]
                 .read_bytes()), ("ir/model.bin", b"")]))],
            _failed("converter", r"the IR's \.xml declares a DTD or entities, which an OpenVINO IR never has")),
    Hostile("ir-xml-junk", MODEL,
            lambda place: [(IR_XML, write(place.path("model.xml"), junk(2048, 13))),
                           (IR_BIN, write(place.path("model.bin"), junk(64, 14)))],
            _failed("converter", r"not a valid OpenVINO IR: ")),
    Hostile("model-archive-traversal", MODEL,
            lambda place: [(ARCHIVE, zip_of(place.path("saved_model.zip"),
                                            [("model/saved_model.pb", b"x"),
                                             (escape(place.outside, "evil.pb"), b"x")]))],
            _failed("converter", r"archive member '\.\./\.\./.*evil\.pb' points outside the archive")),
    Hostile("model-archive-symlink", MODEL,
            lambda place: [(ARCHIVE, tar_of(place.path("saved_model.tar"),
                                            [tar_special("model", tarfile.SYMTYPE, str(place.outside)),
                                             ("model/saved_model.pb", b"x")]))],
            _failed("converter", r"archive member 'model' is a link")),
    # -- dataset archives --------------------------------------------------------------------------
    Hostile("zip-traversal", DATASET, archive("zip", lambda place: [(escape(place.outside, "evil.txt"), b"evil")]),
            _failed("accuracy", r"archive member '\.\./\.\./.*evil\.txt' points outside the archive")),
    # a 60 kB member name: clipped in the message, the verdict at its end kept
    Hostile("zip-traversal-with-a-huge-name", DATASET,
            archive("zip", lambda place: [("a/" * 30_000 + escape(place.outside, "evil.txt"), b"evil")]),
            _failed("accuracy", r"archive member 'a/a/a/.* points outside the archive")),
    Hostile("zip-absolute-path", DATASET,
            archive("zip", lambda place: [(str(place.outside / "evil.txt"), b"evil")]),
            _failed("accuracy", r"archive member '/.*evil\.txt' has an absolute path")),
    Hostile("tar-traversal", DATASET, archive("tar", lambda place: [(escape(place.outside, "evil.txt"), b"evil")]),
            _failed("accuracy", r"archive member '\.\./\.\./.*evil\.txt' points outside the archive")),
    Hostile("tar-absolute-path", DATASET,
            archive("tar", lambda place: [(str(place.outside / "evil.txt"), b"evil")]),
            _failed("accuracy", r"archive member '/.*evil\.txt' has an absolute path")),
    Hostile("tar-symlink-then-write-through-it", DATASET,
            archive("tar", lambda place: [tar_special("images/escape", tarfile.SYMTYPE, str(place.outside)),
                                          ("images/escape/evil.txt", b"evil")]),
            _failed("accuracy", r"archive member 'images/escape' is a link")),
    Hostile("tar-hardlink-to-etc-passwd", DATASET,
            archive("tar", lambda place: [tar_special("images/passwd.jpg", tarfile.LNKTYPE, "/etc/passwd")]),
            _failed("accuracy", r"archive member 'images/passwd\.jpg' is a link")),
    Hostile("tar-device-file", DATASET,
            archive("tar", lambda place: [tar_special("images/null.jpg", tarfile.CHRTYPE)]),
            _failed("accuracy", r"archive member 'images/null\.jpg' is not a regular file")),
    Hostile("zip-symlink-then-write-through-it", DATASET,
            archive("zip", lambda place: [zip_symlink("images/escape", str(place.outside)),
                                          ("images/escape/evil.txt", b"evil")]),
            _failed("accuracy", r"archive member 'images/escape' is a symbolic link")),
    Hostile("zip-bomb", DATASET, archive("zip", lambda place: [("images/huge.bmp", bytes(48 * 1024 * 1024))]),
            _failed("accuracy", r"archive member 'images/huge\.bmp' expands more than 200x: a decompression bomb")),
    Hostile("tar-gz-bomb", DATASET, archive("tar.gz", lambda place: [("images/huge.bmp", bytes(48 * 1024 * 1024))]),
            _failed("accuracy", r"archive member 'images/huge\.bmp' expands more than 200x: a decompression bomb")),
    Hostile("zip-nested-archive", DATASET,
            archive("zip", lambda place: [("more/inner.zip",
                                           zip_of(place.path("inner.zip"), [("eagle.jpg", image("eagle.jpg"))])
                                           .read_bytes())]),
            _failed("accuracy", r"archive member 'more/inner\.zip' is itself an archive; nested archives are refused")),
    Hostile("zip-that-is-junk", DATASET,
            lambda place: [write(place.path("dataset.zip"), b"PK\x03\x04" + junk(4096, 17))],
            _failed("accuracy", r"^accuracy: dataset\.zip is not a zip or tar archive$")),
    # -- images ------------------------------------------------------------------------------------
    Hostile("jpeg-truncated", DATASET,
            loose_images(**{"truncated.jpg": image("giraffe.jpg")[:len(image("giraffe.jpg")) // 2]}),
            _imported(r"truncated\.jpg is a damaged JPEG image.*skipped", images=2)),
    Hostile("jpeg-zero-bytes", DATASET, loose_images(**{"empty.jpg": b""}),
            _imported(r"empty\.jpg is empty \(0 bytes\); skipped", images=2)),
    Hostile("jpeg-random-bytes", DATASET, loose_images(**{"random.jpg": junk(8192, 19)}),
            _imported(r"random\.jpg is not a JPEG, PNG, BMP or WebP image .*skipped", images=2)),
    Hostile("png-claims-100000x100000", DATASET, loose_images(**{"bomb.png": png_claiming(100_000, 100_000)}),
            _imported(r"bomb\.png is 100000x100000 = 10000\.0 megapixels, over the 50 megapixel limit", images=2)),
    Hostile("images-all-corrupt", DATASET,
            loose({"empty.jpg": b"", "random.jpg": junk(8192, 23), "bomb.png": png_claiming(100_000, 100_000)}),
            _failed("accuracy", r"the upload holds no usable image \(3 candidate file\(s\)\); first problem: ")),
    Hostile("dataset-with-a-pickle", DATASET, loose_images(**{"evil.pkl": lambda place: pickle_bytes(place.marker)}),
            _imported(r"evil\.pkl is not a JPEG, PNG, BMP or WebP image", images=2)),
    Hostile("dataset-with-an-npy-payload", DATASET,
            lambda place: [*loose_images()(place), write_npy_payload(place.path("evil.npy"), place.marker)],
            _imported(r"evil\.npy is not a JPEG, PNG, BMP or WebP image", images=2)),
    # -- COCO --------------------------------------------------------------------------------------
    Hostile("coco-not-json", DATASET, coco_set(b'{"images": [{"id": 1,, }'),
            _failed("accuracy", r"instances\.json is malformed JSON: .* at line 1 column \d+")),
    Hostile("coco-categories-not-a-list", DATASET, coco_set(coco(categories="dog")),
            _failed("accuracy", r"instances\.json: categories and annotations must be lists")),
    Hostile("coco-image-id-is-a-string", DATASET,
            coco_set(coco(images=[{"id": "one", "file_name": "dog.jpg"}])),
            _failed("accuracy", r"instances\.json: images\[0\] needs a non-negative integer id")),
    Hostile("coco-duplicate-image-ids", DATASET,
            coco_set(coco(images=[{"id": 1, "file_name": "dog.jpg"}, {"id": 1, "file_name": "eagle.jpg"}])),
            _failed("accuracy", r"instances\.json: image id 1 appears twice \(images\[0\] and images\[1\]\)")),
    Hostile("coco-duplicate-category-ids", DATASET,
            coco_set(coco(categories=[{"id": 1, "name": "dog"}, {"id": 1, "name": "bird"}])),
            _failed("accuracy", r"instances\.json: category id 1 appears twice")),
    Hostile("coco-nested-too-deeply", DATASET, coco_set(b"[" * 200_000),
            _failed("accuracy", r"instances\.json nests JSON too deeply"),
            dataset_format=common_pb2.DATASET_FORMAT_COCO),
    Hostile("coco-unknown-image-ids", DATASET,
            coco_set(coco_with_annotations({"id": 7, "image_id": 999, "category_id": 1, "bbox": [1, 1, 5, 5]},
                                           {"id": 8, "image_id": -3, "category_id": 1, "bbox": [1, 1, 5, 5]})),
            _imported(r"annotation 7: image id 999 is not in images; dropped",
                      r"annotation 8: image id -3 is not in images; dropped", images=2)),
    Hostile("coco-negative-and-huge-boxes", DATASET,
            coco_set(coco_with_annotations({"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, -50, 20]},
                                           {"id": 8, "image_id": 1, "category_id": 1,
                                            "bbox": [-1e300, 0, 2e300, 1e300]},
                                           {"id": 9, "image_id": 1, "category_id": 1, "bbox": [5e12, 5e12, 10, 10]},
                                           {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, "w", 5]})),
            _imported(r"annotation 7: box \[10, 10, -50, 20\] has zero or negative size; dropped",
                      r"annotation 8: box .* reaches outside the 768x576 image; clipped to \[0, 0, 768, 576\]",
                      r"annotation 9: box .* lies outside the 768x576 image; dropped",
                      r"annotation 10: bbox .* is not four finite numbers; dropped", images=2)),
    Hostile("coco-infinite-box", DATASET,
            coco_set(json.dumps(coco_with_annotations(
                {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 1e999, 5]})).replace("Infinity", "1e999")
                .encode()),
            _imported(r"annotation 7: bbox .* is not four finite numbers; dropped", images=2)),
    # -- Pascal VOC --------------------------------------------------------------------------------
    Hostile("voc-unclosed-tags", DATASET,
            loose_images(**{"dog.xml": b"<annotation>\n<filename>dog.jpg</filename>\n<object><name>dog</name>\n"
                                       b"</annotation>\n"}),
            _failed("accuracy", r"dog\.xml is malformed XML: mismatched tag at line 4 column 3")),
    Hostile("voc-billion-laughs", DATASET,
            loose_images(**{"dog.xml": ('<?xml version="1.0"?>' + BILLION_LAUGHS.format(root="annotation")
                                        + voc_xml().replace("<filename>dog.jpg", "<filename>&i;")).encode()}),
            _failed("accuracy",
                    r"dog\.xml declares a DTD or entities .*refused as a possible entity expansion attack")),
    Hostile("voc-external-entity", DATASET,
            loose_images(**{"dog.xml": lambda place: (
                '<?xml version="1.0"?>' + external_entity(str(place.path("dog.jpg"))).format(root="annotation")
                + voc_xml("<note>&x;</note>")).encode()}),
            _failed("accuracy", r"dog\.xml declares a DTD or entities")),
    # -- YOLO --------------------------------------------------------------------------------------
    Hostile("yolo-out-of-range", DATASET,
            loose_images(**{"classes.txt": b"dog\nbird\n", "dog.txt": b"0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n"
                            b"-1 0.5 0.5 0.1 0.1\n0 7.5 0.5 0.1 0.1\n0 0.5 0.5 -0.2 0.1\n0 nan 0.5 0.1 0.1\n"
                            b"0 1e999 0.5 0.1 0.1\n1 0.5\n"}),
            _imported(r"dog\.txt line 2: unknown class 7 \(the names file has 2\); dropped",
                      r"dog\.txt line 3: unknown class -1",
                      r"dog\.txt line 4: coordinates above 1; YOLO boxes are normalized to 0\.\.1; dropped",
                      r"dog\.txt line 5: box .* has zero or negative size; dropped",
                      r"dog\.txt line 6: .* is not 'class cx cy w h' numbers; dropped",
                      r"dog\.txt line 7: .* is not 'class cx cy w h' numbers; dropped",
                      r"dog\.txt line 8: .* is not 'class cx cy w h' numbers; dropped", images=2)),
    # -- uploads whose header lies -----------------------------------------------------------------
    Hostile("upload-name-traversal", UPLOAD, lambda place: [write(place.path("evil.txt"), b"evil")],
            Expect(REFUSED, r"file_name must be a plain file name", code=grpc.StatusCode.INVALID_ARGUMENT),
            upload_name="../../../../tmp/evil.txt"),
    Hostile("upload-absolute-name", UPLOAD, lambda place: [write(place.path("evil.txt"), b"evil")],
            Expect(REFUSED, r"file_name must be a plain file name", code=grpc.StatusCode.INVALID_ARGUMENT),
            upload_name="/etc/cron.d/evil"),
    Hostile("upload-size-lie", UPLOAD, lambda place: [write(place.path("data.bin"), bytes(1000))],
            Expect(REFUSED, r"received 1000 bytes but the header declared 10", code=grpc.StatusCode.INVALID_ARGUMENT),
            upload_name="data.bin", declared_size=10),
    Hostile("upload-over-the-limit", UPLOAD, lambda place: [write(place.path("data.bin"), bytes(10))],
            Expect(REFUSED, r"upload of \d+ bytes exceeds the limit", code=grpc.StatusCode.RESOURCE_EXHAUSTED),
            upload_name="data.bin", declared_size=1024 * _GB),
]

assert len({h.name for h in CORPUS}) == len(CORPUS), "corpus names must be unique"
