"""The Darknet frontend: a .cfg and .weights built directly into an OpenVINO model with the opset API.

    network.py    the parsed network: layer ops, output shapes, heads, Darknet's arithmetic constants
    cfg.py        parsing and checking a .cfg into a network
    weights.py    .weights files: header, size check against a network, streamed reading, writing
    graph.py      the OpenVINO model of a network, weights streamed in
    yolo_info.py  the Model API ``model_info`` values a network's YOLO heads imply
    frontend.py   the entry point: convert_darknet (cfg + weights + names -> openvino.Model)

Generated weights and the numpy forward pass that serve the reference models and the tests are not
converter code: they live in services/reference_weights.py.
"""

from services.converter.darknet.cfg import expected_weight_count
from services.converter.darknet.frontend import convert_darknet, read_names

__all__ = ["convert_darknet", "expected_weight_count", "read_names"]
