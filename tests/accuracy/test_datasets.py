"""Dataset import at the domain level: each format, label mapping, preview, and every hostile input.

Datasets are built inside the tests from the real photographs in data/images and data/vtest, with
hand-made plausible boxes; normalized annotations are checked through pycocotools.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from services.accuracy.dataset_import import DatasetLimits, NormalizedDataset, normalize_dataset
from services.accuracy.preview import preview_size, render_preview
from services.common import images as images_module
from workbench_runtime.errors import FailedPrecondition, InvalidArgument
from services.common.images import decode_image, read_image_header, sniff_image
from services.common.labels import (COCO80_LABELS, COCO_CATEGORIES, coco80_to_91, coco91_to_80, label_key,
                                    map_labels, model_labels_from_info, require_label_mapping)
from workbench.v1 import common_pb2

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "data" / "images"
VTEST = REPO / "data" / "vtest"

# (file, width, height) of the photographs, with plausible boxes [x, y, w, h] by COCO category name
SCENES = {
    "dog.jpg": (768, 576, [("bicycle", [118, 125, 452, 320]), ("dog", [124, 219, 196, 324]),
                           ("truck", [468, 76, 218, 94])]),
    "person.jpg": (640, 424, [("person", [190, 98, 84, 280]), ("dog", [62, 262, 142, 90]),
                              ("horse", [398, 110, 204, 232])]),
    "giraffe.jpg": (500, 500, [("giraffe", [164, 20, 212, 460]), ("zebra", [248, 268, 150, 190])]),
    "horses.jpg": (773, 512, [("horse", [0, 180, 190, 280]), ("horse", [200, 120, 270, 330]),
                              ("horse", [430, 130, 330, 340])]),
    "eagle.jpg": (773, 512, [("bird", [120, 80, 500, 380])]),
}
COCO_IDS = {c["name"]: c["id"] for c in COCO_CATEGORIES}


# ---- helpers ---------------------------------------------------------------------------------------


class Stored:
    """A store_image that records what it was given and checks the file is there."""

    def __init__(self):
        self.calls: list[tuple[Path, str]] = []

    def __call__(self, path: Path, name: str) -> None:
        assert Path(path).is_file(), path
        self.calls.append((Path(path), name))

    @property
    def names(self) -> list[str]:
        return [name for _, name in self.calls]

    def paths(self, dataset: NormalizedDataset) -> dict[int, Path]:
        by_name = {name: path for path, name in self.calls}
        return {e.id: by_name[e.file_name] for e in dataset.images}


def normalize(tmp_path: Path, sources: list[Path], names: list[str] | None = None, fmt: str = "",
              limits: DatasetLimits = DatasetLimits(decode_threads=2)) -> tuple[NormalizedDataset, Stored]:
    stored = Stored()
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    dataset = normalize_dataset(sources, names or [p.name for p in sources], fmt, work, stored, limits=limits)
    return dataset, stored


def coco_index(dataset: NormalizedDataset) -> COCO:
    coco = COCO()
    coco.dataset = json.loads(json.dumps(dataset.annotations))  # what the servicer stores
    coco.createIndex()
    return coco


def write_zip(path: Path, members: dict[str, bytes | Path], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data.read_bytes() if isinstance(data, Path) else data)
    return path


def write_tar(path: Path, members: dict[str, bytes | Path], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            raw = data.read_bytes() if isinstance(data, Path) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


def coco_json(scenes: dict[str, tuple], ids: dict[str, int] | None = None, *, prefix: str = "") -> dict:
    images, annotations = [], []
    for n, (file_name, (w, h, boxes)) in enumerate(scenes.items()):
        image_id = (ids or {}).get(file_name, 1000 + n)
        images.append({"id": image_id, "file_name": prefix + file_name, "width": w, "height": h})
        for name, box in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": COCO_IDS[name],
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": [dict(c, supercategory="x")
                                                                        for c in COCO_CATEGORIES]}


def coco_zip(tmp_path: Path, data: dict, extra: dict[str, bytes | Path] | None = None,
             scenes: dict | None = None) -> Path:
    members = {"coco/annotations/instances_val.json": json.dumps(data).encode()}
    members.update({f"coco/val/{name}": PHOTOS / name for name in (scenes or SCENES)})
    members.update(extra or {})
    return write_zip(tmp_path / "coco.zip", members)


def one_scene(boxes: list, categories=None, file_name: str = "dog.jpg", image_id: int = 7) -> dict:
    w, h, _ = SCENES[file_name]
    return {"images": [{"id": image_id, "file_name": file_name, "width": w, "height": h}],
            "annotations": [{"id": i, "image_id": image_id, "category_id": cat, "bbox": box}
                            for i, (cat, box) in enumerate(boxes, 1)],
            "categories": categories or [{"id": 18, "name": "dog"}, {"id": 2, "name": "bicycle"}]}


def loose(tmp_path: Path, files: dict[str, bytes | Path]) -> tuple[list[Path], list[str]]:
    """Loose uploads as the servicer downloads them: numbered local files, the user's names beside."""
    folder = tmp_path / "downloads"
    folder.mkdir(exist_ok=True)
    paths = []
    for i, (name, data) in enumerate(files.items()):
        path = folder / f"{i:04d}{Path(name).suffix}"
        path.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
        paths.append(path)
    return paths, list(files)


def warned(dataset: NormalizedDataset, *fragments: str) -> str:
    for line in dataset.warnings:
        if all(f in line for f in fragments):
            return line
    raise AssertionError(f"no warning with {fragments} in {dataset.warnings}")


def check_summary_fits_proto(dataset: NormalizedDataset) -> None:
    values = dataset.summary()
    values["format"] = common_pb2.DatasetFormat.Value(f"DATASET_FORMAT_{values['format']}")
    values["classes"] = [common_pb2.ClassStats(**c) for c in values["classes"]]
    common_pb2.DatasetSummary(**values)  # as the servicer builds it: no unknown or mistyped field
    json.dumps(dataset.manifest())


# ---- formats ---------------------------------------------------------------------------------------


def test_coco_zip_keeps_image_and_91_style_category_ids(tmp_path):
    ids = {"dog.jpg": 397133, "person.jpg": 37777, "giraffe.jpg": 252219, "horses.jpg": 87038, "eagle.jpg": 174482}
    dataset, stored = normalize(tmp_path, [coco_zip(tmp_path, coco_json(SCENES, ids))], ["my coco.zip"])

    assert dataset.format == "COCO" and dataset.warnings == []
    assert sorted(e.id for e in dataset.images) == sorted(ids.values())
    assert stored.names == [f"{ids[n]:06d}.jpg" for n in SCENES]
    dog = next(e for e in dataset.images if e.id == 397133)
    assert (dog.file_name, dog.original_name, dog.width, dog.height) == ("397133.jpg", "coco/val/dog.jpg", 768, 576)
    coco = coco_index(dataset)
    assert len(coco.getImgIds()) == 5 and len(coco.getAnnIds()) == 12
    assert coco.getCatIds(catNms=["dog"]) == [18] and coco.getCatIds(catNms=["toothbrush"]) == [90]
    assert sorted(a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[397133]))) == \
        sorted(box for _, box in SCENES["dog.jpg"][2])
    assert len(coco.getAnnIds(catIds=[19])) == 4  # horses: 3 + 1
    classes = {c["name"]: c for c in dataset.summary()["classes"]}
    assert classes["horse"] == {"id": 19, "name": "horse", "boxes": 4, "images": 2}
    summary = dataset.summary()
    assert (summary["image_count"], summary["annotated_image_count"], summary["box_count"]) == (5, 5, 12)
    assert (summary["min_width"], summary["max_width"], summary["median_width"]) == (500, 773, 768)
    assert dataset.manifest()["boxes_per_image"]["3"] == 3
    check_summary_fits_proto(dataset)


def test_voc_tar_gz(tmp_path):
    def xml(file_name, w, h, objects):
        body = "".join(f"<object><name>{n}</name><difficult>{int(n == 'dog')}</difficult><bndbox><xmin>{x}</xmin>"
                       f"<ymin>{y}</ymin><xmax>{x + bw}</xmax><ymax>{y + bh}</ymax></bndbox></object>"
                       for n, (x, y, bw, bh) in objects)
        return (f"<annotation><folder>VOC2012</folder><filename>{file_name}</filename><size><width>{w}</width>"
                f"<height>{h}</height><depth>3</depth></size>{body}</annotation>").encode()

    members = {}
    for name in ("dog.jpg", "person.jpg", "giraffe.jpg"):
        w, h, boxes = SCENES[name]
        members[f"VOCdevkit/VOC2012/Annotations/{Path(name).stem}.xml"] = xml(name, w, h, boxes)
        members[f"VOCdevkit/VOC2012/JPEGImages/{name}"] = PHOTOS / name
    members["VOCdevkit/VOC2012/JPEGImages/eagle.jpg"] = PHOTOS / "eagle.jpg"  # no XML: kept without boxes
    mask = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()
    members["VOCdevkit/VOC2012/SegmentationClass/dog.png"] = mask
    members["VOCdevkit/VOC2012/ImageSets/Main/val.txt"] = b"dog\nperson\ngiraffe\n"
    dataset, stored = normalize(tmp_path, [write_tar(tmp_path / "voc.tar.gz", members)])

    assert dataset.format == "VOC"
    assert len(dataset.warnings) == 3
    warned(dataset, "VOC2012/JPEGImages/eagle.jpg has no VOC annotation file; kept without boxes")
    warned(dataset, "SegmentationClass/dog.png: not part of the VOC dataset; ignored")
    names = sorted({n for s in ("dog.jpg", "person.jpg", "giraffe.jpg") for n, _ in SCENES[s][2]})
    assert dataset.categories == [{"id": i, "name": n} for i, n in enumerate(names, 1)]
    assert [e.original_name.rsplit("/", 1)[-1] for e in dataset.images] == ["dog.jpg", "giraffe.jpg", "person.jpg",
                                                                            "eagle.jpg"]
    assert stored.names == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    coco = coco_index(dataset)
    dog_id = names.index("dog") + 1
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1], catIds=[dog_id]))
    assert [a["bbox"] for a in anns] == [[124, 219, 196, 324]] and anns[0]["difficult"] == 1
    assert len(coco.getAnnIds()) == 8
    check_summary_fits_proto(dataset)


def test_yolo_loose_files_with_obj_names(tmp_path):
    names = ["person", "dog", "horse", "bicycle", "truck"]
    files: dict[str, bytes | Path] = {"obj.names": ("\n".join(names) + "\n").encode()}
    for image in ("dog.jpg", "person.jpg"):
        w, h, boxes = SCENES[image]
        lines = [f"{names.index(n)} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"
                 for n, (x, y, bw, bh) in boxes]
        files[image] = PHOTOS / image
        files[Path(image).stem + ".txt"] = "\n".join(lines).encode()
    files["giraffe.jpg"] = PHOTOS / "giraffe.jpg"  # no label file: an image without objects
    sources, file_names = loose(tmp_path, files)
    dataset, stored = normalize(tmp_path, sources, file_names)

    assert dataset.format == "YOLO" and dataset.warnings == []
    assert dataset.categories == [{"id": i, "name": n} for i, n in enumerate(names, 1)]
    assert [e.original_name for e in dataset.images] == ["dog.jpg", "giraffe.jpg", "person.jpg"]
    coco = coco_index(dataset)
    assert len(coco.getAnnIds()) == 6 and coco.getAnnIds(imgIds=[2]) == []
    truck = coco.loadAnns(coco.getAnnIds(imgIds=[1], catIds=[5]))[0]
    assert truck["bbox"] == pytest.approx([468, 76, 218, 94], abs=0.01)
    summary = dataset.summary()
    assert (summary["image_count"], summary["annotated_image_count"]) == (3, 2)
    check_summary_fits_proto(dataset)


def test_yolo_ultralytics_layout_with_data_yaml(tmp_path):
    w, h, boxes = SCENES["horses.jpg"]
    labels = "\n".join(f"0 {(x + bw / 2) / w} {(y + bh / 2) / h} {bw / w} {bh / h}" for _, (x, y, bw, bh) in boxes)
    archive = write_zip(tmp_path / "yolo.zip", {
        "ds/data.yaml": b"path: .\nval: images/val\nnames:\n  0: horse  # the only class\n",
        "ds/images/val/horses.jpg": PHOTOS / "horses.jpg",
        "ds/labels/val/horses.txt": labels.encode(),
    })
    dataset, _ = normalize(tmp_path, [archive], fmt="YOLO")
    assert dataset.categories == [{"id": 1, "name": "horse"}]
    coco = coco_index(dataset)
    assert [a["bbox"] for a in coco.loadAnns(coco.getAnnIds())] == [pytest.approx(b, abs=0.01) for _, b in boxes]



def yolo_with_yaml(tmp_path: Path, text: bytes | str) -> tuple[list[Path], list[str]]:
    """Loose YOLO files: horses.jpg, its label (class 0) and data.yaml holding text."""
    return loose(tmp_path, {"horses.jpg": PHOTOS / "horses.jpg", "horses.txt": b"0 0.5 0.5 0.2 0.2\n",
                            "data.yaml": text.encode() if isinstance(text, str) else text})


@pytest.mark.parametrize("names", [
    "names: [horse, 'zebra', \"big dog\"]  # flow list",
    "names:\n  - horse\n  - zebra  # block list\n  - big dog\n",
    "names:\n  0: horse\n  1: zebra\n  2: big dog\n",
    "names: {'0': horse, '1': zebra, '2': big dog}",
    "path: ../datasets\ntrain: images/train\nval: images/val\nnc: 3\nnames: [horse, zebra, big dog]\n",
])
def test_data_yaml_names_in_every_yaml_form(tmp_path, names):
    dataset, _ = normalize(tmp_path, *yolo_with_yaml(tmp_path, names), fmt="YOLO")
    assert [c["name"] for c in dataset.categories] == ["horse", "zebra", "big dog"]
    assert len(dataset.annotations["annotations"]) == 1


@pytest.mark.parametrize("text, message", [
    ("names: [horse, zebra\nval: [x\n", r"data.yaml is malformed YAML: .* at line 2 column"),
    ("names: horse\n", "data.yaml line 1: names must be a list or an index: name map"),
    ("nc: 2\nnames: {0: horse, 2: zebra}\n", "data.yaml line 2: names indexes must be 0..N-1"),
    ("names: [horse, no]\n", "names must be a list or an index: name map .*quote names"),
    ("names: " + "[" * 100_000, "data.yaml nests YAML too deeply"),
])
def test_malformed_data_yaml_names_is_refused(tmp_path, text, message):
    with pytest.raises(InvalidArgument, match=message) as err:
        normalize(tmp_path, *yolo_with_yaml(tmp_path, text), fmt="YOLO")
    assert err.value.reason == "ANNOTATIONS_MALFORMED"


def test_data_yaml_over_one_mib_is_refused(tmp_path):
    text = "names: [horse]\n" + "# padding\n" * (1024**2 // 10)
    with pytest.raises(InvalidArgument, match=r"data.yaml is \d+ bytes; YAML files may have at most 1048576") as err:
        normalize(tmp_path, *yolo_with_yaml(tmp_path, text), fmt="YOLO")
    assert err.value.reason == "ANNOTATIONS_TOO_LARGE"


def test_yaml_without_names_is_ignored_and_aliases_do_not_expand(tmp_path):
    """A YAML file without a names key (even one YAML cannot read) names no classes; a billion-laughs
    alias tree beside names is read as shared references, never expanded."""
    dataset, _ = normalize(tmp_path, *yolo_with_yaml(tmp_path, "model: [unclosed\n"), fmt="YOLO")
    assert dataset.categories == [{"id": 1, "name": "class_0"}]
    laughs = "a: &a [ha, ha, ha, ha, ha, ha, ha, ha, ha]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(12))
    (tmp_path / "laughs").mkdir()
    dataset, _ = normalize(tmp_path / "laughs", *yolo_with_yaml(tmp_path / "laughs", laughs + "names: [horse]\n"),
                           fmt="YOLO")
    assert dataset.categories == [{"id": 1, "name": "horse"}]

def test_imagenet_class_folders(tmp_path):
    members = {f"val/street/{p.name}": p for p in sorted(VTEST.glob("*.jpg"))[:3]}
    members.update({"val/animals/dog.jpg": PHOTOS / "dog.jpg", "val/animals/horses.jpg": PHOTOS / "horses.jpg"})
    dataset, stored = normalize(tmp_path, [write_zip(tmp_path / "imagenet.zip", members)])

    assert dataset.format == "IMAGENET" and dataset.annotations is None
    assert dataset.categories == [{"id": 1, "name": "animals"}, {"id": 2, "name": "street"}]
    assert dataset.labels == {1: 1, 2: 1, 3: 2, 4: 2, 5: 2}
    assert [c["images"] for c in dataset.summary()["classes"]] == [2, 3]
    assert dataset.manifest()["images"][0]["category_id"] == 1
    check_summary_fits_proto(dataset)


def test_plain_images_take_their_extension_from_the_content(tmp_path):
    png = cv2.imencode(".png", cv2.imread(str(PHOTOS / "kite.jpg")))[1].tobytes()
    sources, file_names = loose(tmp_path, {"kite.jpeg": png, "vtest.JPG": VTEST / "vtest_0000.jpg"})
    dataset, stored = normalize(tmp_path, sources, file_names)
    assert dataset.format == "IMAGES" and dataset.annotations is None and dataset.labels is None
    assert stored.names == ["000001.png", "000002.jpg"]
    assert [(e.width, e.height) for e in dataset.images] == [(1352, 900), (768, 576)]
    assert dataset.summary()["classes"] == [] and dataset.summary()["annotated_image_count"] == 0
    check_summary_fits_proto(dataset)


def test_explicit_format_without_its_annotations_is_refused(tmp_path):
    archive = coco_zip(tmp_path, coco_json(SCENES))
    with pytest.raises(InvalidArgument, match="no Pascal VOC annotation"):
        normalize(tmp_path, [archive], fmt="VOC")


# ---- label mapping ---------------------------------------------------------------------------------


def test_coco80_labels_map_onto_91_style_ids_by_name():
    mapping = require_label_mapping(COCO80_LABELS, COCO_CATEGORIES)
    assert len(mapping.model_to_dataset) == 80 and not mapping.unmatched_model_labels
    assert mapping.model_to_dataset[0] == 1 and mapping.model_to_dataset[79] == 90
    assert all(mapping.model_to_dataset[i] == coco80_to_91(i) for i in range(80))
    assert mapping.model_to_dataset[COCO80_LABELS.index("motorbike")] == 4  # "motorcycle" in the JSON
    assert coco91_to_80(90) == 79 and coco91_to_80(12) is None
    assert mapping.dataset_to_model()[18] == COCO80_LABELS.index("dog")


def test_label_mapping_of_a_normalized_dataset(tmp_path):
    dataset, _ = normalize(tmp_path, [coco_zip(tmp_path, coco_json({"dog.jpg": SCENES["dog.jpg"]}),
                                               scenes=["dog.jpg"])])
    labels = model_labels_from_info({"labels": "person Traffic_Light dog bicycle unicorn",
                                     "model_type": "YOLOv4"})
    mapping = map_labels(labels, dataset.categories)
    assert mapping.model_to_dataset == {0: 1, 1: 10, 2: 18, 3: 2}
    assert mapping.unmatched_model_labels == ["unicorn"] and "toothbrush" in mapping.unmatched_dataset_classes
    assert label_key("Potted-Plant") == label_key("pottedplant") == label_key("potted plant")
    assert model_labels_from_info({"label_names": '["traffic light", "stop sign"]', "labels": "x"}) == \
        ["traffic light", "stop sign"]


def test_disjoint_labels_fail_with_failed_precondition():
    with pytest.raises(FailedPrecondition, match="share no name with the model's labels"):
        require_label_mapping(["cat", "dog"], [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}])


# ---- preview ---------------------------------------------------------------------------------------


def test_preview_draws_a_grid_of_the_first_images(tmp_path):
    dataset, stored = normalize(tmp_path, [coco_zip(tmp_path, coco_json(SCENES))])
    png = render_preview(dataset.manifest(), dataset.annotations, stored.paths(dataset), max_images=4)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert (picture.shape[1], picture.shape[0]) == preview_size(4) == (2 * 320 + 3 * 4, 2 * (240 + 22) + 3 * 4)
    assert picture.std() > 20  # photographs, not an empty canvas


def test_preview_of_a_classification_set(tmp_path):
    members = {"a/cls1/dog.jpg": PHOTOS / "dog.jpg", "a/cls2/eagle.jpg": PHOTOS / "eagle.jpg",
               "a/cls2/kite.jpg": PHOTOS / "kite.jpg"}
    dataset, stored = normalize(tmp_path, [write_zip(tmp_path / "c.zip", members)])
    png = render_preview(dataset.manifest(), None, stored.paths(dataset))
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert (picture.shape[1], picture.shape[0]) == preview_size(3)


# ---- hostile input: archives -----------------------------------------------------------------------


def test_archive_path_traversal_is_refused(tmp_path):
    archive = write_zip(tmp_path / "t.zip", {"images/dog.jpg": PHOTOS / "dog.jpg", "../../evil.jpg": b"x"})
    with pytest.raises(InvalidArgument, match="points outside the archive") as err:
        normalize(tmp_path, [archive])
    assert err.value.field == "sources"
    assert not (tmp_path / "evil.jpg").exists() and not list((tmp_path / "work" / "files").iterdir())


def test_archive_absolute_path_is_refused(tmp_path):
    archive = write_tar(tmp_path / "t.tar", {"/tmp/evil.jpg": PHOTOS / "dog.jpg"}, mode="w")
    with pytest.raises(InvalidArgument, match="absolute path"):
        normalize(tmp_path, [archive])


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_archive_symlink_is_refused(tmp_path, kind):
    if kind == "tar":
        archive = tmp_path / "t.tar.gz"
        with tarfile.open(archive, "w:gz") as tf:
            link = tarfile.TarInfo("images/passwd.jpg")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(link)
    else:
        archive = tmp_path / "t.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            info = zipfile.ZipInfo("images/passwd.jpg")
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    with pytest.raises(InvalidArgument, match="link"):
        normalize(tmp_path, [archive])


def test_zip_bomb_is_refused(tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", {"images/dog.jpg": PHOTOS / "dog.jpg",
                                                "images/huge.bmp": bytes(24 * 1024 * 1024)})
    assert archive.stat().st_size < 200_000
    with pytest.raises(InvalidArgument, match="decompression bomb"):
        normalize(tmp_path, [archive])


def test_archive_over_the_total_size_limit_is_refused(tmp_path):
    archive = write_zip(tmp_path / "big.zip", {f"{n}": PHOTOS / n for n in SCENES}, zipfile.ZIP_STORED)
    with pytest.raises(InvalidArgument, match="expands beyond 500000 bytes"):
        normalize(tmp_path, [archive], limits=DatasetLimits(max_total_bytes=500_000))


def test_archive_with_too_many_files_is_refused(tmp_path):
    archive = write_zip(tmp_path / "many.zip", {f"img{i}.jpg": b"x" for i in range(12)})
    with pytest.raises(InvalidArgument, match="more than 10 members"):
        normalize(tmp_path, [archive], limits=DatasetLimits(max_files=10))


def test_nested_archive_is_refused(tmp_path):
    inner = write_zip(tmp_path / "inner.zip", {"dog.jpg": PHOTOS / "dog.jpg"})
    outer = write_zip(tmp_path / "outer.zip", {"images/giraffe.jpg": PHOTOS / "giraffe.jpg", "more/inner.zip": inner})
    with pytest.raises(InvalidArgument, match="nested archives are refused"):
        normalize(tmp_path, [outer])


def test_archive_among_loose_files_is_refused(tmp_path):
    sources, names = loose(tmp_path, {"dog.jpg": PHOTOS / "dog.jpg", "more.zip": b"PK\x05\x06" + bytes(18)})
    with pytest.raises(InvalidArgument, match="one archive alone"):
        normalize(tmp_path, sources, names)


def test_loose_file_names_are_never_paths(tmp_path):
    sources, names = loose(tmp_path, {"../../etc/cron.d/dog.jpg": PHOTOS / "dog.jpg",
                                      "C:\\Windows\\giraffe.jpg": PHOTOS / "giraffe.jpg"})
    dataset, stored = normalize(tmp_path, sources, names)
    assert [e.original_name for e in dataset.images] == ["dog.jpg", "giraffe.jpg"]
    assert all(path.parent == tmp_path / "downloads" for path, _ in stored.calls)


# ---- hostile input: images -------------------------------------------------------------------------


def test_non_image_files_are_skipped_with_a_warning(tmp_path):
    sources, names = loose(tmp_path, {"dog.jpg": PHOTOS / "dog.jpg", "report.pdf": b"%PDF-1.4 not a picture",
                                      "photo.jpg.exe": b"MZ\x90\x00", "notes.md": b"# notes"})
    dataset, stored = normalize(tmp_path, sources, names)
    assert stored.names == ["000001.jpg"]
    warned(dataset, "report.pdf is not a JPEG, PNG, BMP or WebP image", "skipped")
    warned(dataset, "photo.jpg.exe is not a JPEG")
    warned(dataset, "notes.md", "ignored")


def test_corrupt_images_are_skipped_with_a_warning(tmp_path):
    data = (PHOTOS / "dog.jpg").read_bytes()
    sources, names = loose(tmp_path, {"truncated.jpg": data[:len(data) // 2],
                                      "garbage.jpg": b"\xff\xd8\xff" + bytes(500), "good.jpg": PHOTOS / "giraffe.jpg"})
    dataset, stored = normalize(tmp_path, sources, names)
    assert [e.original_name for e in dataset.images] == ["good.jpg"]
    warned(dataset, "truncated.jpg is a damaged JPEG image", "skipped")
    warned(dataset, "garbage.jpg", "skipped")


def test_empty_image_is_skipped_with_a_warning(tmp_path):
    archive = coco_zip(tmp_path, coco_json(SCENES), extra={"coco/val/eagle.jpg": b""})
    dataset, stored = normalize(tmp_path, [archive])
    assert len(dataset.images) == 4
    warned(dataset, "coco/val/eagle.jpg is empty (0 bytes)", "skipped with its 1 box(es)")
    assert len(coco_index(dataset).getAnnIds()) == 11


def _png_header(width: int, height: int) -> bytes:
    import zlib
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    idat = zlib.compress(bytes(1000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray((PHOTOS / "dog.jpg").read_bytes())
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_decompression_bomb_dimensions_are_skipped_before_decoding(tmp_path, monkeypatch):
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(images_module.cv2, "imdecode", lambda buf, flags: decoded.append(len(buf)) or real(buf, flags))
    bomb_png, bomb_jpeg = _png_header(100_000, 100_000), _jpeg_with_size(60_000, 60_000)
    assert sniff_image(bomb_png).pixels == 10**10 and sniff_image(bomb_jpeg).width == 60_000
    sources, names = loose(tmp_path, {"bomb.png": bomb_png, "bomb.jpg": bomb_jpeg, "dog.jpg": PHOTOS / "dog.jpg"})
    dataset, _ = normalize(tmp_path, sources, names)
    assert [e.original_name for e in dataset.images] == ["dog.jpg"]
    warned(dataset, "bomb.png is 100000x100000 = 10000.0 megapixels, over the 50 megapixel limit")
    warned(dataset, "bomb.jpg is 60000x60000")
    assert decoded == [(PHOTOS / "dog.jpg").stat().st_size]  # only the real photograph was decoded
    with pytest.raises(InvalidArgument, match="megapixel limit") as err:
        decode_image(bomb_png)
    assert err.value.reason == "IMAGE_TOO_LARGE"


def test_header_sniffing_reads_every_accepted_format():
    picture = cv2.imread(str(PHOTOS / "person.jpg"))
    for suffix in (".jpg", ".png", ".bmp", ".webp"):
        header = sniff_image(cv2.imencode(suffix, picture)[1].tobytes())
        assert (header.width, header.height, header.suffix) == (640, 424, suffix)
    assert read_image_header(PHOTOS / "kite.jpg").pixels == 1352 * 900
    assert decode_image((PHOTOS / "person.jpg").read_bytes()).shape == (424, 640, 3)
    with pytest.raises(InvalidArgument, match="empty"):
        decode_image(b"")


# ---- hostile input: annotations -------------------------------------------------------------------


def test_annotations_of_missing_images_are_dropped_with_a_warning(tmp_path):
    data = coco_json(SCENES)
    data["images"].append({"id": 99, "file_name": "not_uploaded.jpg", "width": 10, "height": 10})
    data["images"].append({"id": 98, "file_name": "../../../../etc/passwd", "width": 10, "height": 10})
    data["annotations"].append({"id": 500, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]})
    data["annotations"].append({"id": 501, "image_id": 12345, "category_id": 1, "bbox": [1, 1, 5, 5]})
    dataset, _ = normalize(tmp_path, [coco_zip(tmp_path, data)])
    assert len(dataset.images) == 5 and len(dataset.annotations["annotations"]) == 12
    warned(dataset, "image 99 'not_uploaded.jpg' is not in the upload; dropped with its 1 annotation(s)")
    warned(dataset, "image 98 '../../../../etc/passwd' is not in the upload; dropped")
    warned(dataset, "annotation 501: image id 12345 is not in images; dropped")


def test_boxes_outside_the_image_are_clipped_with_a_warning(tmp_path):
    data = one_scene([(18, [-20, 100, 200, 300]), (2, [600, 400, 300, 300]), (18, [900, 50, 10, 10])])
    dataset, _ = normalize(tmp_path, [coco_zip(tmp_path, data, scenes=["dog.jpg"])])
    assert [a["bbox"] for a in dataset.annotations["annotations"]] == [[0, 100, 180, 300], [600, 400, 168, 176]]
    assert dataset.annotations["annotations"][0]["area"] == 180 * 300
    warned(dataset, "annotation 1: box [-20, 100, 200, 300] reaches outside the 768x576 image; "
                    "clipped to [0, 100, 180, 300]")
    warned(dataset, "annotation 3", "lies outside the 768x576 image; dropped")


def test_boxes_of_zero_or_negative_size_are_dropped_with_a_warning(tmp_path):
    data = one_scene([(18, [10, 10, 0, 50]), (18, [10, 10, 50, -5]), (2, [10, 10, 50, 50])])
    dataset, _ = normalize(tmp_path, [coco_zip(tmp_path, data, scenes=["dog.jpg"])])
    assert [a["bbox"] for a in dataset.annotations["annotations"]] == [[10, 10, 50, 50]]
    warned(dataset, "annotation 1: box [10, 10, 0, 50] has zero or negative size; dropped")
    warned(dataset, "annotation 2: box [10, 10, 50, -5] has zero or negative size; dropped")


def test_unknown_category_ids_are_dropped_with_a_warning(tmp_path):
    data = one_scene([(18, [10, 10, 50, 50]), (77, [10, 10, 50, 50]), ("dog", [1, 1, 5, 5])])
    dataset, _ = normalize(tmp_path, [coco_zip(tmp_path, data, scenes=["dog.jpg"])])
    assert len(dataset.annotations["annotations"]) == 1
    warned(dataset, "annotation 2: unknown category id 77; dropped")
    warned(dataset, "annotation 3: unknown category id 'dog'; dropped")


def test_yolo_unknown_classes_and_malformed_lines_are_dropped_with_a_warning(tmp_path):
    sources, names = loose(tmp_path, {"dog.jpg": PHOTOS / "dog.jpg", "classes.txt": b"dog\nbicycle\n",
                                      "dog.txt": b"0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n0 0.5 oops 0.1\n"})
    dataset, _ = normalize(tmp_path, sources, names)
    assert len(dataset.annotations["annotations"]) == 1
    warned(dataset, "dog.txt line 2: unknown class 7 (the names file has 2); dropped")
    warned(dataset, "dog.txt line 3", "is not 'class cx cy w h' numbers; dropped")


def test_duplicate_image_ids_are_refused(tmp_path):
    data = coco_json(SCENES)
    data["images"][1]["id"] = data["images"][0]["id"]
    expected = r"instances_val.json: image id 1000 appears twice \(images\[0\] and images\[1\]\)"
    with pytest.raises(InvalidArgument, match=expected):
        normalize(tmp_path, [coco_zip(tmp_path, data)])


def test_duplicate_annotation_ids_are_warned_and_renumbered(tmp_path):
    data = coco_json(SCENES)
    for ann in data["annotations"]:
        ann["id"] = 1
    dataset, _ = normalize(tmp_path, [coco_zip(tmp_path, data)])
    warned(dataset, "annotation id 1 appears 12 times; annotations are renumbered 1..N")
    assert [a["id"] for a in dataset.annotations["annotations"]] == list(range(1, 13))
    assert len(coco_index(dataset).anns) == 12


def test_malformed_json_names_the_file_and_line(tmp_path):
    text = json.dumps(coco_json(SCENES), indent=1).replace('"iscrowd": 0', '"iscrowd": 0,,', 1)
    line = text[:text.index(",,")].count("\n") + 1
    expected = f"coco/annotations/instances_val.json is malformed JSON: .* at line {line} "
    with pytest.raises(InvalidArgument, match=expected):
        normalize(tmp_path, [write_zip(tmp_path / "c.zip", {"coco/annotations/instances_val.json": text.encode(),
                                                            "coco/val/dog.jpg": PHOTOS / "dog.jpg"})])


def test_json_nested_too_deeply_is_refused(tmp_path):
    sources, names = loose(tmp_path, {"dog.jpg": PHOTOS / "dog.jpg", "instances.json": b"[" * 200_000})
    with pytest.raises(InvalidArgument, match="instances.json nests JSON too deeply"):
        normalize(tmp_path, sources, names, fmt="COCO")


def test_warnings_of_one_kind_are_listed_20_times_then_counted(tmp_path):
    data = one_scene([(18, [700, 10 + i, 100, 20]) for i in range(30)])
    dataset, _ = normalize(tmp_path, [coco_zip(tmp_path, data, scenes=["dog.jpg"])])
    assert len(dataset.annotations["annotations"]) == 30
    assert len(dataset.warnings) == 21 and dataset.warnings[-1] == "... and 10 more boxes clipped to their image"


def test_malformed_xml_names_the_file_and_line(tmp_path):
    xml = b"<annotation>\n<filename>dog.jpg</filename>\n<object><name>dog</name>\n</annotation>\n"
    sources, names = loose(tmp_path, {"dog.jpg": PHOTOS / "dog.jpg", "dog.xml": xml})
    with pytest.raises(InvalidArgument, match="dog.xml is malformed XML: mismatched tag at line 4 column 3"):
        normalize(tmp_path, sources, names)


@pytest.mark.parametrize("attack", ["laughs", "external"])
def test_xml_entity_attacks_are_refused(tmp_path, attack):
    if attack == "laughs":
        entities = '<!ENTITY a "ha">' + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'
                                                 for i in range(8))
        xml = (f'<?xml version="1.0"?><!DOCTYPE annotation [{entities}]>'
               '<annotation><filename>&i;</filename></annotation>')
    else:
        xml = ('<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
               '<annotation><filename>&x;</filename></annotation>')
    sources, names = loose(tmp_path, {"dog.jpg": PHOTOS / "dog.jpg", "dog.xml": xml.encode()})
    with pytest.raises(InvalidArgument, match="dog.xml declares a DTD or entities") as err:
        normalize(tmp_path, sources, names)
    assert err.value.reason == "ANNOTATIONS_UNSAFE"


def test_dataset_without_usable_images_is_refused(tmp_path):
    sources, names = loose(tmp_path, {"a.jpg": b"", "b.png": b"not a png", "c.txt": b"hello"})
    with pytest.raises(InvalidArgument, match=r"no usable image \(2 candidate file\(s\)\); first problem:") as err:
        normalize(tmp_path, sources, names)
    assert err.value.field == "sources"


def test_coco_whose_images_are_all_missing_is_refused(tmp_path):
    archive = write_zip(tmp_path / "c.zip", {"instances.json": json.dumps(coco_json(SCENES)).encode()})
    with pytest.raises(InvalidArgument, match="no usable image .* is not in the upload"):
        normalize(tmp_path, [archive])
