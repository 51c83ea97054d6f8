"""OpenVINO's exception text as the reason a user can act on.

Why: OpenVINO's messages open with C++ source locations ("Exception from src/inference/src/cpp/core.cpp:117:",
"Check 'translate_map.count(...)' failed at src/frontends/.../frontend.cpp:221:") and wrapper lines ("FrontEnd API
failed with OpConversionFailure:"); the reason ("No translator found for Convolution2DTransposeBias node.") is in
the lines after them, which a message keeping only the first line lost.
"""

from __future__ import annotations

import re

LIMIT = 400
# Where in OpenVINO's C++ (or Python) it was raised, and wrappers that only name an exception class.
_NOISE = re.compile(
    r"^(?:Exception from \S+:\d+:?"  # Exception from src/inference/src/cpp/core.cpp:84:
    r"|Check '.*' failed at \S+:\d+:?"  # Check 'cond' failed at src/frontends/paddle/src/input_model.cpp:400:
    r"|FrontEnd API failed with \w+:?"  # FrontEnd API failed with GeneralFailure:
    r"|Traceback \(most recent call last\):|File \".*\", line \d+.*"  # a Python traceback's frames
    r"|\S+\.(?:cpp|hpp|h|py):\d+:?)\s*")  # a bare source location
# "While validating node '<the node and all its inputs>' with friendly_name 'x':" -> "in node 'x':"
_VALIDATING = re.compile(r"^While validating node '.*' with friendly_name '(.*)':$")


def reason(exc: BaseException) -> str:
    """The exception's text without source locations, on one line of at most LIMIT characters; the exception's
    type name when nothing else is left."""
    parts = []
    for line in str(exc).splitlines():
        line = " ".join(line.split())
        while (noise := _NOISE.match(line)) and noise.end():
            line = line[noise.end():]
        if line:
            parts.append(_VALIDATING.sub(r"in node '\1':", line))
    text = ""
    for part in parts:
        text += part if not text else (" " if text[-1] in ".:;!?" else ": ") + part
    text = text.rstrip(":")
    if len(text) > LIMIT:
        text = text[:LIMIT - 1].rstrip() + "…"
    return text or type(exc).__name__
