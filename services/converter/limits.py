"""What an import refuses as too large to run: an input or a constant with more elements than a tensor may have.

Plain domain code, checked after the user's options are applied (so an input shape given at import is what
counts) and before anything is stored. A dynamic input counts at the shape the analysis takes it at
(services.common.analysis.input_shapes), a dimension with no default at the least it allows (1).
"""

from __future__ import annotations

import math
from collections.abc import Collection

import openvino as ov

from services.common.analysis import input_shapes
from workbench_runtime.errors import InvalidArgument

SETTING = "WORKBENCH_MAX_TENSOR_ELEMENTS"


def refuse_oversized(model: ov.Model, max_elements: int, shaped: Collection[str] = ()) -> None:
    """Raise InvalidArgument naming the first input or constant with more than max_elements elements (0: no
    limit). `shaped` as in services.common.analysis.analyze."""
    if max_elements <= 0:
        return
    for port, taken in zip(model.inputs, input_shapes(model, shaped)):
        if taken.dims is None:
            continue
        declared = port.get_partial_shape()
        count = math.prod(d if d is not None else max(1, declared[i].get_min_length())
                          for i, d in enumerate(taken.dims))
        if count > max_elements:
            name = port.get_any_name()
            found = taken.declared + (f", taken as {taken.text} ({', '.join(taken.notes)})" if taken.notes else "")
            raise InvalidArgument(
                f"input {name} has the shape {found}: {count:,} elements, more than the limit of {max_elements:,} "
                f"(the converter's {SETTING}); import it with an input shape that fits: --input-shape {name}=SHAPE "
                f"in `workbench model import`, ConvertOptions.input_shapes in the API", field="options.input_shapes")
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            shape = op.get_output_partial_shape(0)
            count = math.prod(d.get_length() for d in shape)
            if count > max_elements:
                raise InvalidArgument(
                    f"constant {op.get_friendly_name()} has the shape {shape}: {count:,} elements, more than the "
                    f"limit of {max_elements:,} (the converter's {SETTING}); only a converter with a larger "
                    f"{SETTING} imports it", field="files")
