"""The Darknet frontend: a .cfg, its .weights and (optionally) the class names -> an openvino.Model.

The model carries the Model API ``model_info`` rt_info its heads imply (see yolo_info.py), so no later
step needs configuration, and in ``conversion_parameters`` the framework and the weights file's version.

Domain code: failures raise workbench_runtime.errors.InvalidArgument, never gRPC errors.
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench_runtime.errors import InvalidArgument
from workbench_runtime.model_info import write_model_info
from services.converter.darknet.cfg import CfgSource, load_cfg
from services.converter.darknet.graph import build_model
from services.converter.darknet.weights import open_weights
from services.converter.darknet.yolo_info import darknet_model_info


def read_names(path: str | os.PathLike) -> list[str]:
    """Class names, one a line, as Darknet's .names files hold them (blank lines dropped, ends stripped)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise InvalidArgument(f"cannot read the names file: {error.strerror}", field="names",
                              reason="DARKNET_NAMES_READ") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def convert_darknet(cfg: CfgSource, weights: str | os.PathLike, *, names: str | os.PathLike | list[str] | None = None,
                    width: int | None = None, height: int | None = None, architecture: str | None = None):
    """Build an openvino.Model from a Darknet cfg and weights.

    names: a .names file or a list of class names; with it (and a network with [yolo]/[region] heads) the model
    carries Model API ``model_info`` rt_info. width/height override the [net] input size.
    """
    network = load_cfg(cfg, width=width, height=height)
    with open_weights(weights, network) as (header, stream):
        model = build_model(network, stream)
    model.set_rt_info("darknet", ["conversion_parameters", "framework"])
    model.set_rt_info(header.version, ["conversion_parameters", "darknet_weights_version"])
    if names is not None and network.heads:
        labels = read_names(names) if not isinstance(names, list) else [str(n) for n in names]
        write_model_info(model, darknet_model_info(network, labels, architecture=architecture))
    return model

