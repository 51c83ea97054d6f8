"""The Darknet frontend against OpenCV's Darknet reader, on real photographs and on synthetic cfgs.

OpenCV 5 dropped its Darknet importer, so the oracle is OpenCV 4 (cv2.dnn.readNetFromDarknet): its wheel is
fetched once with pip into the workbench cache and run in a subprocess, beside the venv's OpenCV 5. OpenCV's
[yolo]/[region] layers hand back decoded boxes, so the comparison is with the raw convolution feeding each head:
OpenCV names it conv_<i> after Darknet's layer index i (a linear convolution without batch norm has no other node;
with one, OpenCV adds bn_<i> and "<activation>_<i+1>").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from services import reference_models, reference_weights
from tests.opencv4 import opencv4_site
from workbench_runtime.errors import InvalidArgument
from services.converter.darknet import convert_darknet, expected_weight_count, read_names
from services.converter.darknet.cfg import load_cfg, parse_cfg
from services.converter.darknet.network import BN_EPSILON
from services.converter.darknet.weights import WeightStream, read_weights_header, write_weights
from workbench_runtime.model_info import model_info_strings, read_model_info

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "data" / "images"
VTEST = REPO / "data" / "vtest"
TOLERANCE = 0.05  # max abs difference of raw head outputs

ORACLE = textwrap.dedent('''
    import json, sys
    import cv2, numpy as np
    req = json.load(open(sys.argv[1]))
    net = cv2.dnn.readNetFromDarknet(req["cfg"], req["weights"])
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    names = set(net.getLayerNames())
    missing = [n for n in req["layers"] if n not in names]
    if missing:
        sys.exit(f"OpenCV has no layers {missing}; it has {sorted(names)}")
    for i, item in enumerate(req["inputs"]):
        if item.endswith(".npy"):
            blob = np.load(item)
        else:
            blob = cv2.dnn.blobFromImage(cv2.imread(item), 1 / 255.0, (req["width"], req["height"]),
                                         swapRB=True, crop=False)
        net.setInput(blob)
        outs = net.forward(req["layers"])
        np.savez(f"{req['out']}_{i}.npz", blob=blob, **dict(zip(req["layers"], outs)))
''')


@pytest.fixture(scope="session")
def opencv4() -> Path:
    """A folder holding OpenCV 4's cv2 package (OpenCV 5 has no Darknet reader)."""
    return opencv4_site()


class Oracle:
    def __init__(self, site: Path, tmp: Path):
        self.site, self.tmp = site, tmp

    def raw_heads(self, cfg: Path, weights: Path, inputs: list, width: int, height: int) -> list[dict]:
        """OpenCV's raw head inputs (and the blob it fed) for each input: an image path or an NCHW array."""
        network = load_cfg(cfg, width=width, height=height)
        layers = [f"conv_{head.layer - 1}" for head in network.heads]
        items = []
        for i, item in enumerate(inputs):
            if isinstance(item, np.ndarray):
                path = self.tmp / f"blob_{i}.npy"
                np.save(path, item)
                item = path
            items.append(str(item))
        request = self.tmp / "request.json"
        request.write_text(json.dumps(dict(cfg=str(cfg), weights=str(weights), inputs=items, width=width,
                                           height=height, layers=layers, out=str(self.tmp / "out"))))
        script = self.tmp / "oracle.py"
        script.write_text(ORACLE)
        env = dict(os.environ, PYTHONPATH=str(self.site))
        subprocess.run([sys.executable, str(script), str(request)], env=env, check=True, timeout=240)
        results = []
        for i in range(len(items)):
            with np.load(self.tmp / f"out_{i}.npz") as z:
                results.append({"blob": z["blob"]} | {head.output: z[layer]
                                                      for head, layer in zip(network.heads, layers)})
        return results


@pytest.fixture
def oracle(opencv4, tmp_path) -> Oracle:
    return Oracle(opencv4, tmp_path)


def infer(model: ov.Model, blobs: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    # f32 on purpose: on CPUs with AMX/avx512_bf16 OpenVINO would otherwise run in bf16
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = []
    for blob in blobs:
        out = compiled(blob)
        results.append({port.get_any_name(): value for port, value in out.items()})
    return results


def compare(model: ov.Model, expected: list[dict]) -> float:
    """Max abs difference over every head output and input; asserts names and shapes match."""
    ours = infer(model, [e["blob"] for e in expected])
    worst = 0.0
    for got, want in zip(ours, expected):
        assert set(got) == set(want) - {"blob"}
        for name, value in got.items():
            assert value.shape == want[name].shape, name
            assert np.isfinite(want[name]).all(), name
            worst = max(worst, float(np.abs(value - want[name]).max()))
    return worst


# --------------------------------------------------------------------------------- reference models


def test_yolov4_tiny_real_weights_match_opencv_on_photographs(oracle):
    files = reference_models.yolov4_tiny()
    photos = [IMAGES / "dog.jpg", IMAGES / "person.jpg", VTEST / "vtest_0100.jpg"]
    expected = oracle.raw_heads(files.cfg, files.weights, photos, 416, 416)
    model = convert_darknet(files.cfg, files.weights, names=files.names)
    assert [o.get_any_name() for o in model.outputs] == ["yolo_30", "yolo_37"]
    assert list(model.outputs[0].get_shape()) == [1, 45, 13, 13]
    assert list(model.outputs[1].get_shape()) == [1, 45, 26, 26]
    assert model.inputs[0].get_any_name() == "image" and list(model.inputs[0].get_shape()) == [1, 3, 416, 416]
    worst = compare(model, expected)
    print(f"yolov4-tiny (trained weights) max abs diff vs OpenCV: {worst:.2e}")
    assert worst < TOLERANCE
    # the trained heads do say something: outputs of real scale, not near zero
    assert max(np.abs(e["yolo_30"]).max() for e in expected) > 1.0


def test_yolov4_tiny_weight_count_matches_the_real_file():
    files = reference_models.yolov4_tiny()
    assert files.weights.stat().st_size == 20 + 4 * expected_weight_count(files.cfg)


def test_full_yolov4_generated_weights_match_opencv(oracle):
    files = reference_models.yolov4_generated()
    assert files.weights.stat().st_size == 20 + 4 * expected_weight_count(files.cfg)
    started = time.perf_counter()
    expected = oracle.raw_heads(files.cfg, files.weights, [IMAGES / "horses.jpg"], 416, 416)
    opencv_s = time.perf_counter() - started
    started = time.perf_counter()
    model = convert_darknet(files.cfg, files.weights, names=files.names, width=416, height=416)
    convert_s = time.perf_counter() - started
    assert [o.get_any_name() for o in model.outputs] == ["yolo_139", "yolo_150", "yolo_161"]
    assert [list(o.get_shape()) for o in model.outputs] == [[1, 255, 52, 52], [1, 255, 26, 26], [1, 255, 13, 13]]
    worst = compare(model, expected)
    print(f"YOLOv4 416 (generated weights) max abs diff vs OpenCV: {worst:.2e}; OpenCV load+run {opencv_s:.1f} s, "
          f"convert {convert_s:.2f} s")
    assert worst < TOLERANCE
    spread = float(np.std(expected[0]["yolo_139"]))
    assert 0.05 < spread < 20, f"generated weights should give outputs of order one, got std {spread}"


MEMORY_PROBE = textwrap.dedent('''
    import sys, time
    from services.converter.darknet import convert_darknet
    def status(key):
        return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024
    import openvino  # noqa: F401  (its import is not the converter's memory)
    before = status("VmRSS")
    started = time.perf_counter()
    model = convert_darknet(sys.argv[1], sys.argv[2], names=sys.argv[3], width=416, height=416)
    print(time.perf_counter() - started, before, status("VmHWM"))
''')


def test_full_yolov4_conversion_time_and_peak_memory():
    files = reference_models.yolov4_generated()
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(files.cfg), str(files.weights), str(files.names)],
                         cwd=REPO, capture_output=True, text=True, check=True, timeout=240).stdout.split()
    seconds, before, peak = float(out[0]), int(out[1]), int(out[2])
    size = files.weights.stat().st_size
    print(f"YOLOv4 conversion: {seconds:.2f} s, weights {size / 2**20:.0f} MiB, RSS before {before / 2**20:.0f} MiB, "
          f"peak {peak / 2**20:.0f} MiB (+{(peak - before) / size:.2f}x the weights file)")
    assert peak - before < 2 * size


# ------------------------------------------------------------------------------------- synthetic cfgs

# Every layer kind and option the converter builds, on a non-square input; ends in a [yolo] head.
LAYERS_CFG = """
[net]
width=96
height=64
channels=3

# 0
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=mish

# 1: stride 2 -> 32x48
[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=swish

# 2: 1x1 with pad=1 (Darknet: padding = size/2 = 0)
[convolutional]
batch_normalize=1
filters=32
size=1
stride=1
pad=1
activation=logistic

# 3: grouped
[convolutional]
batch_normalize=1
filters=32
size=3
groups=4
stride=1
pad=1
activation=leaky

# 4
[shortcut]
from=-3
activation=linear

# 5: second half of the channels, as yolov4-tiny does
[route]
layers=-1
groups=2
group_id=1

# 6: explicit padding, no batch norm
[convolutional]
filters=16
size=5
stride=1
padding=2
activation=relu

# 7: depthwise
[convolutional]
batch_normalize=1
filters=16
size=3
groups=16
stride=1
pad=1
activation=tanh

# 8
[shortcut]
from=-2
activation=leaky

# 9: 32 channels
[route]
layers=-1,-4

# 10: the tiny-YOLO size-2 stride-1 pool (pads one on the right and bottom)
[maxpool]
size=2
stride=1

# 11: -> 16x24
[maxpool]
size=2
stride=2

# 12-17: SPP
[maxpool]
size=5
stride=1

[route]
layers=-2

[maxpool]
size=9
stride=1

[route]
layers=-4

[maxpool]
size=13
stride=1

[route]
layers=-1,-3,-5,-6

# 18
[convolutional]
batch_normalize=1
filters=32
size=1
stride=1
pad=1
activation=silu

# 19: -> 32x48
[upsample]
stride=2

# 20: a positive index
[route]
layers=-1,4

# 21
[dropout]
probability=.5

# 22
[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

# 23
[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=2
num=6
scale_x_y=1.1

# 24: a second head on the 16x24 grid
[route]
layers=-7

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask=3,4,5
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=2
num=6
"""

# Odd sizes through strided convolutions and pools, a size-3 stride-2 pool, and a YOLOv2 [region] head.
REGION_CFG = """
[net]
width=45
height=35
channels=3

# 0: -> 18x23
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

# 1: -> 9x12 (odd width: the window runs over one padded column)
[maxpool]
size=2
stride=2

# 2: -> 5x6
[maxpool]
size=3
stride=2

# 3: a 3x3 convolution without padding -> 3x4
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=0
activation=leaky

# 4
[convolutional]
size=1
stride=1
pad=1
filters=40
activation=linear

# 5
[region]
anchors=0.57,0.67, 1.87,2.06, 3.33,5.47, 7.88,3.52, 9.77,9.16
classes=3
coords=4
num=5
softmax=1
"""


def synthetic(tmp_path: Path, cfg_text: str, seed: int = 0, version=(0, 2, 0)) -> tuple[Path, Path]:
    cfg = tmp_path / "net.cfg"
    cfg.write_text(cfg_text)
    weights = tmp_path / "net.weights"
    reference_weights.write_random_weights(cfg, weights, seed=seed, version=version)
    return cfg, weights


def random_blobs(network, count: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 1, (1, network.channels, network.height, network.width)).astype(np.float32)
            for _ in range(count)]


def test_every_layer_kind_matches_opencv(oracle, tmp_path):
    cfg, weights = synthetic(tmp_path, LAYERS_CFG)
    network = load_cfg(cfg)
    assert [layer.shape for layer in network.layers][:12] == [
        (16, 64, 96), (32, 32, 48), (32, 32, 48), (32, 32, 48), (32, 32, 48), (16, 32, 48), (16, 32, 48),
        (16, 32, 48), (16, 32, 48), (32, 32, 48), (32, 32, 48), (32, 16, 24)]
    expected = oracle.raw_heads(cfg, weights, random_blobs(network, 2) + [IMAGES / "kite.jpg"], 96, 64)
    model = convert_darknet(cfg, weights, names=["a", "b"])
    worst = compare(model, expected)
    print(f"synthetic all-layers cfg max abs diff vs OpenCV: {worst:.2e}")
    assert worst < 1e-3
    info = read_model_info(model)
    assert [o.name for o in info.outputs] == ["yolo_23", "yolo_26"]
    assert info.masks == (0, 1, 2, 3, 4, 5)


def test_region_head_and_odd_sizes_match_opencv(oracle, tmp_path):
    cfg, weights = synthetic(tmp_path, REGION_CFG, seed=3)
    network = load_cfg(cfg)
    assert [layer.shape for layer in network.layers] == [
        (8, 18, 23), (8, 9, 12), (8, 5, 6), (16, 3, 4), (40, 3, 4), (40, 3, 4)]
    expected = oracle.raw_heads(cfg, weights, random_blobs(network, 2), 45, 35)
    model = convert_darknet(cfg, weights, names=["x", "y", "z"])
    assert [o.get_any_name() for o in model.outputs] == ["region_5"]
    worst = compare(model, expected)
    print(f"synthetic region cfg max abs diff vs OpenCV: {worst:.2e}")
    assert worst < 1e-3
    info = read_model_info(model)
    assert info.model_type == "YOLOv2" and info.architecture == "yolov2"
    (head,) = info.outputs
    assert head.kind == "region" and head.softmax and head.coords == 4 and head.mask == (0, 1, 2, 3, 4)
    assert head.anchors[1] == (1.87, 2.06)


@pytest.mark.parametrize("activation", ["relu6", "elu", "hard_mish"])
def test_activations_opencv_lacks_match_numpy(tmp_path, activation):
    cfg_text = LAYERS_CFG.replace("activation=relu\n", f"activation={activation}\n")
    cfg, weights = synthetic(tmp_path, cfg_text, seed=5)
    network = load_cfg(cfg)
    assert network.layers[6].op.activation == activation
    (blob,) = random_blobs(network, 1)
    with open(weights, "rb") as f:
        read_weights_header(f, weights.stat().st_size)
        stream = WeightStream(f)

        def convolve(i, conv, x):
            bias = stream.take(conv.filters, "")
            if conv.batch_normalize:
                scales, mean, var = (stream.take(conv.filters, "") for _ in range(3))
            kernel = stream.take(conv.filters * (conv.in_channels // conv.groups) * conv.size ** 2, "")
            y = reference_weights.conv_numpy(x, kernel.reshape(conv.filters, -1, conv.size, conv.size), conv)
            if conv.batch_normalize:
                y = (y - mean[:, None, None]) * (scales / np.sqrt(var + BN_EPSILON))[:, None, None]
            return y + bias[:, None, None]

        outputs = reference_weights.forward_numpy(network, blob[0], convolve)
    expected = [{"blob": blob} | {head.output: outputs[head.layer - 1][None] for head in network.heads}]
    worst = compare(convert_darknet(cfg, weights), expected)
    assert worst < 1e-3


def test_old_header_with_32_bit_seen_converts(oracle, tmp_path):
    cfg, weights = synthetic(tmp_path, REGION_CFG, seed=4, version=(0, 1, 0))
    assert weights.stat().st_size == 16 + 4 * expected_weight_count(cfg)
    network = load_cfg(cfg)
    expected = oracle.raw_heads(cfg, weights, random_blobs(network, 1), 45, 35)
    model = convert_darknet(cfg, weights)
    assert compare(model, expected) < 1e-3
    assert model.get_rt_info(["conversion_parameters", "darknet_weights_version"]).astype(str) == "0.1.0"


@pytest.mark.parametrize("version,header", [((0, 2, 0), 20), ((0, 1, 0), 16), ((1, 0, 0), 20),
                                            ((1000, 0, 0), 16), ((0, 1000, 0), 16), ((0, 2, 5), 20)])
def test_header_width_follows_the_version(tmp_path, version, header):
    cfg = tmp_path / "net.cfg"
    cfg.write_text(REGION_CFG)
    count = expected_weight_count(cfg)
    weights = tmp_path / "net.weights"
    write_weights(weights, np.zeros(count, np.float32), version=version, seen=12345)
    assert weights.stat().st_size == header + 4 * count
    with open(weights, "rb") as f:
        parsed = read_weights_header(f, weights.stat().st_size)
    assert (parsed.major, parsed.minor, parsed.revision, parsed.seen, parsed.size) == (*version, 12345, header)
    convert_darknet(cfg, weights)


def test_network_without_heads_outputs_its_last_layer(tmp_path):
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\nwidth=16\nheight=16\n[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
                   "[maxpool]\nsize=2\nstride=2\n")
    weights = tmp_path / "net.weights"
    reference_weights.write_random_weights(cfg, weights)
    model = convert_darknet(cfg, weights, names=["unused"])
    assert [o.get_any_name() for o in model.outputs] == ["layer_1"]
    assert list(model.outputs[0].get_shape()) == [1, 4, 8, 8]
    assert model_info_strings(model) == {}


# ------------------------------------------------------------------------------------------ model_info


def test_model_info_survives_save_and_read(tmp_path):
    files = reference_models.yolov4_tiny()
    model = convert_darknet(files.cfg, files.weights, names=files.names)
    before = read_model_info(model)
    ov.save_model(model, tmp_path / "tiny.xml")
    loaded = ov.Core().read_model(tmp_path / "tiny.xml")
    strings = model_info_strings(loaded)
    assert strings == model_info_strings(model)
    after = read_model_info(loaded)
    assert after == before

    assert strings["model_type"] == "YOLOv4-tiny" and after.architecture == "yolov4-tiny"
    labels = read_names(files.names)
    assert len(labels) == 10 and after.labels == tuple(labels)
    assert strings["labels"] == " ".join(label.replace(" ", "_") for label in labels)
    # Model API's order: largest grid first; its YoloV4 default masks for tiny are the same
    assert strings["masks"] == "1 2 3 3 4 5"
    assert strings["anchors"] == "10 14 23 27 37 58 81 82 135 169 344 319"
    assert [o.name for o in after.outputs] == ["yolo_37", "yolo_30"]
    assert after.outputs[0].anchors == ((23, 27), (37, 58), (81, 82))
    assert after.outputs[1].anchors == ((81, 82), (135, 169), (344, 319))
    assert [o.scale_x_y for o in after.outputs] == [1.05, 1.05]
    assert all(o.classes == 10 and o.kind == "yolo" and not o.new_coords for o in after.outputs)
    assert (after.input_width, after.input_height) == (416, 416)
    assert after.reverse_input_channels and after.scale_values == (255, 255, 255) and after.mean_values == (0, 0, 0)
    assert after.resize_type == "standard" and after.confidence_threshold == 0.25 and after.iou_threshold == 0.45
    assert after.pad_value == 128  # Darknet's letterbox grey, were it letterboxed (an evaluation's letterbox mode)
    # every output the info names is an output of the model, with the channels it implies
    shapes = {o.get_any_name(): list(o.get_shape()) for o in loaded.outputs}
    for out in after.outputs:
        assert shapes[out.name][1] == len(out.mask) * (out.classes + 5)


def test_model_info_keeps_label_names_with_spaces():
    network = load_cfg(reference_models.yolov4_generated().cfg, width=416, height=416)
    labels = read_names(reference_models.yolov4_generated().names)
    from workbench_runtime.model_info import parse_model_info
    from services.converter.darknet.yolo_info import darknet_model_info

    strings = darknet_model_info(network, labels)
    assert "traffic_light" in strings["labels"].split()
    info = parse_model_info(strings)
    assert info.labels[9] == "traffic light" and info.architecture == "yolov4"
    assert [o.name for o in info.outputs] == ["yolo_139", "yolo_150", "yolo_161"]
    assert info.masks == tuple(range(9)) and info.outputs[2].anchors[2] == (459, 401)
    with pytest.raises(InvalidArgument, match="names file lists 3 classes"):
        darknet_model_info(network, ["a", "b", "c"])


def family_cfg(*, convolutions: int, activation: str = "leaky", heads: int = 2, scale_x_y: float = 1.0,
               new_coords: bool = False, letter_box: bool = False, widest: int = 16) -> str:
    """A small cfg with a family's marks: how many convolutions (the heads' included), their activation, the
    heads' scale_x_y / new_coords, [net] letter_box, the widest convolution's filters."""
    net = "[net]\nwidth=64\nheight=64\nchannels=3\n" + ("letter_box=1\n" if letter_box else "")
    body = [f"[convolutional]\nbatch_normalize=1\nfilters={widest}\nsize=3\nstride=2\npad=1\n"
            f"activation={activation}\n"]
    body += [f"[convolutional]\nbatch_normalize=1\nfilters=8\nsize=1\nstride=1\npad=1\nactivation={activation}\n"
             for _ in range(convolutions - heads - 1)]
    for i in range(heads):
        body.append(f"[convolutional]\nfilters=21\nsize=1\nactivation={'logistic' if new_coords else 'linear'}\n")
        body.append(f"[yolo]\nmask={3 * i},{3 * i + 1},{3 * i + 2}\n"
                    f"anchors={', '.join(str(10 + v) for v in range(6 * heads))}\nclasses=2\nnum={3 * heads}\n"
                    f"scale_x_y={scale_x_y}\nnew_coords={int(new_coords)}\n")
        body.append("[route]\nlayers=-3\n")  # back to the layer before the head's convolution
    return net + "\n" + "\n".join(body[:-1])


FAMILIES = {  # cfg -> (architecture, model_type, letterboxed)
    "yolov3": (dict(convolutions=75, heads=3), "yolov3", "YOLOv3", False),
    "yolov3-tiny": (dict(convolutions=13), "yolov3-tiny", "YOLOv3-tiny", False),
    "yolov3-tiny_3l": (dict(convolutions=16, heads=3), "yolov3-tiny", "YOLOv3-tiny", False),
    "yolov4-tiny-3l": (dict(convolutions=24, heads=3, scale_x_y=1.05), "yolov4-tiny", "YOLOv4-tiny", False),
    "yolov4-csp": (dict(convolutions=115, activation="mish", heads=3, scale_x_y=2.0, new_coords=True,
                        letter_box=True, widest=1024), "yolov4-csp", "Scaled-YOLOv4", True),
    "yolov4x-mish": (dict(convolutions=137, activation="mish", heads=3, scale_x_y=2.0, new_coords=True,
                          letter_box=True, widest=1280), "yolov4x-mish", "Scaled-YOLOv4", True),
    "yolov3-letterboxed": (dict(convolutions=75, heads=3, letter_box=True), "yolov3", "YOLOv3", True),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_model_type_architecture_and_letterbox_follow_the_cfg(family):
    from services.converter.darknet.yolo_info import darknet_model_info

    marks, architecture, model_type, letterboxed = FAMILIES[family]
    network = parse_cfg(family_cfg(**marks))
    assert len(network.convolutions) == marks["convolutions"] and network.letter_box == letterboxed
    info = read_model_info(darknet_model_info(network, ["a", "b"]))
    assert (info.architecture, info.model_type) == (architecture, model_type)
    assert info.resize_type == ("fit_to_window_letterbox" if letterboxed else "standard")
    assert info.pad_value == 128
    assert all(o.new_coords == marks.get("new_coords", False) for o in info.outputs)


@pytest.mark.parametrize("name, architecture, model_type", [("yolov4.cfg", "yolov4", "YOLOv4"),
                                                            ("yolov4-tiny.cfg", "yolov4-tiny", "YOLOv4-tiny")])
def test_model_type_of_the_cfgs_in_data(name, architecture, model_type):
    from services.converter.darknet.yolo_info import darknet_model_info

    network = load_cfg(REPO / "data" / "darknet" / name, width=416, height=416)
    strings = darknet_model_info(network, read_names(REPO / "data" / "darknet" / "coco.names"))
    assert (strings["architecture"], strings["model_type"], strings["resize_type"]) == (
        architecture, model_type, "standard")
    # an architecture given by the caller names the model_type too; one we do not know keeps the guessed type
    given = darknet_model_info(network, read_names(REPO / "data" / "darknet" / "coco.names"), architecture="yolov3")
    assert (given["architecture"], given["model_type"]) == ("yolov3", "YOLOv3")
    custom = darknet_model_info(network, read_names(REPO / "data" / "darknet" / "coco.names"), architecture="mine")
    assert (custom["architecture"], custom["model_type"]) == ("mine", model_type)


def test_letter_box_reaches_the_converted_model(tmp_path):
    cfg, weights = tiny(tmp_path, TINY_CFG.replace("[net]\n", "[net]\nletter_box=1\n", 1))
    info = read_model_info(convert_darknet(cfg, weights, names=["a", "b"]))
    assert (info.resize_type, info.pad_value, info.model_type) == ("fit_to_window_letterbox", 128, "YOLOv3-tiny")
    cfg, weights = tiny(tmp_path, TINY_CFG.replace("[net]\n", "[net]\nletter_box=0\n", 1))
    assert read_model_info(convert_darknet(cfg, weights, names=["a", "b"])).resize_type == "standard"


# ---------------------------------------------------------------------------------------------- errors

TINY_CFG = """
[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=21
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
"""


def tiny(tmp_path: Path, text: str = TINY_CFG) -> tuple[Path, Path]:
    """A cfg (TINY_CFG or a variant of it) and weights that fit TINY_CFG."""
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(text)
    weights = tmp_path / "tiny.weights"
    reference_weights.write_random_weights(parse_cfg(TINY_CFG), weights)
    return cfg, weights


@contextmanager
def raises(match: str, *, field: str = "cfg"):
    """pytest.raises(InvalidArgument) that also checks the field the error blames."""
    with pytest.raises(InvalidArgument, match=match) as info:
        yield info
    assert info.value.field == field


def test_the_tiny_cfg_converts(tmp_path):
    cfg, weights = tiny(tmp_path)
    assert [o.get_any_name() for o in convert_darknet(cfg, weights).outputs] == ["yolo_2"]


def test_unknown_layer_names_its_section(tmp_path):
    cfg, weights = tiny(tmp_path, TINY_CFG.replace("[yolo]", "[crop]\n\n[yolo]", 1))
    with raises(r"unknown layer type \[crop\] at layer 2 \(cfg section 3, line 2[0-9]\)") as info:
        convert_darknet(cfg, weights)
    assert info.value.reason == "DARKNET_UNSUPPORTED"


def test_truncated_weights(tmp_path):
    cfg, weights = tiny(tmp_path)
    data = weights.read_bytes()
    weights.write_bytes(data[:-4])
    expected = 20 + 4 * expected_weight_count(cfg)
    with raises(f"truncated weights: expected {expected} bytes of weights for this cfg .* got {expected - 4}",
                field="weights"):
        convert_darknet(cfg, weights)
    weights.write_bytes(data[:10])
    with raises("truncated weights: the file is 10 bytes, shorter than a Darknet header", field="weights"):
        convert_darknet(cfg, weights)


def test_over_long_weights(tmp_path):
    cfg, weights = tiny(tmp_path)
    weights.write_bytes(weights.read_bytes() + b"\0" * 8)
    expected = 20 + 4 * expected_weight_count(cfg)
    with raises(f"over-long weights: expected {expected} bytes of weights for this cfg .* got {expected + 8}; "
                "the weights were trained for another cfg", field="weights"):
        convert_darknet(cfg, weights)


def test_header_that_lies_about_its_width(tmp_path):
    cfg, weights = tiny(tmp_path)
    count = expected_weight_count(cfg)
    write_weights(weights, np.zeros(count, np.float32), version=(0, 1, 0))  # 16-byte header
    data = weights.read_bytes()
    weights.write_bytes(np.array([0, 2, 0], "<i4").tobytes() + data[12:])  # now claims a 20-byte one
    with raises("the size would fit a header whose 'seen' is 32-bit", field="weights"):
        convert_darknet(cfg, weights)


def test_weights_of_another_cfg(tmp_path):
    """yolov4-tiny's trained weights (10 classes) against the stock 80-class cfg."""
    files = reference_models.yolov4_tiny()
    stock = REPO / "data" / "darknet" / "yolov4-tiny.cfg"
    with raises(r"over-long weights|truncated weights: expected \d+ bytes of weights for this cfg", field="weights"):
        convert_darknet(stock, files.weights)


def test_head_that_does_not_fit_its_convolution(tmp_path):
    cfg, weights = tiny(tmp_path, TINY_CFG.replace("classes=2", "classes=3"))
    with raises(r"layer 2 \[yolo\] \(cfg line \d+\) needs 3 anchors x \(3 classes \+ 5\) = 24 channels from the "
                "layer before it, which gives 21"):
        convert_darknet(cfg, weights)


@pytest.mark.parametrize("layers,message", [
    ("-5", r"layer 2 \[route\] \(cfg line \d+\): layers= refers to layer -5 \(layer -3\), which does not exist"),
    ("7", r"layers= refers to layer 7, which does not exist: this layer can only use layers 0..1"),
    ("2", r"layers= refers to layer 2, which does not exist"),  # itself
    ("-1,x", r"layers='-1,x' is not a comma-separated list of integers"),
])
def test_route_to_a_missing_layer(tmp_path, layers, message):
    text = TINY_CFG.replace("[yolo]", f"[route]\nlayers={layers}\n\n[yolo]", 1)
    cfg, weights = tiny(tmp_path, text)
    with raises(message):
        convert_darknet(cfg, weights)


@pytest.mark.parametrize("text,message", [
    ("", "holds no sections"),
    ("[convolutional]\nfilters=1\n", r"must start with \[net\], not \[convolutional\]"),
    ("width=3\n[net]\n", "option 'width=3' comes before any"),
    ("[net]\nwidth=32\nheight=32\n", r"has a \[net\] but no layers"),
    ("[net]\nheight=32\n[maxpool]\n", r"\[net\] \(cfg line 1\): width= is missing"),
    ("[net]\nwidth=0\nheight=32\n[maxpool]\n", "width='0' must be at least 1"),
    ("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=abc\n", r"layer 0 \[convolutional\] \(cfg line 4\): "
                                                                   "filters='abc' is not an integer"),
    ("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=4\nactivation=gelu3\n", "activation='gelu3' is not"),
    ("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=4\ngroups=3\n", "groups=3 must divide"),
    ("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=4\nsize=64\n", "does not fit its 32x32 input"),
    ("[net]\nwidth=32\nheight=32\n[net\n", "malformed section header"),
    ("[net]\nwidth=32\nheight=32\nnonsense\n", "expected key=value"),
    ("[net]\nwidth=32\nheight=32\n[maxpool]\nsize=1\n[upsample]\n[route]\nlayers=-1,-2\n",
     r"differ in size \(layer 1: 64x64, layer 0: 32x32\)"),
    ("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=4\n[shortcut]\nfrom=-2\n", "refers to layer -2"),
    ("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=4\n[convolutional]\nfilters=8\n[shortcut]\nfrom=-2\n",
     "adds only equal shapes"),
])
def test_malformed_cfg(tmp_path, text, message):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(text)
    with raises(message):
        expected_weight_count(cfg)


def test_reading_a_heads_output_is_refused(tmp_path):
    text = TINY_CFG + "\n[convolutional]\nfilters=4\n"
    with raises(r"layer 3 \[convolutional\] .* uses the output of layer 2 \[yolo\]"):
        parse_cfg(text)
    with raises(r"uses the output of layer 2 \[yolo\]"):
        parse_cfg(TINY_CFG + "\n[route]\nlayers=-1\n")


def test_missing_files(tmp_path):
    cfg, weights = tiny(tmp_path)
    with raises("cannot read the cfg"):
        convert_darknet(tmp_path / "nope.cfg", weights)
    with raises("cannot read the weights", field="weights"):
        convert_darknet(cfg, tmp_path / "nope.weights")
