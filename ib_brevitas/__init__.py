"""ib-brevitas: exact information-plane analysis of quantized Brevitas networks.

Data path, one direction: probe batch -> hooks -> integer codes (`probe`,
`codes`) -> counts and MI (`functional`) -> `LayerMI` records (`records`) ->
sinks (`sinks`: JSONL in a `RunDir`, TensorBoard, phase detection, plots,
export reports). The paper's application (SYN data, its networks, the fast
training engine, `ib-brevitas train`) is `ib_brevitas.experiments`, which the
library never imports.
"""

import importlib

from ib_brevitas.functional import (
    conditional_entropy,
    entropy,
    joint_entropy,
    mutual_information,
)
from ib_brevitas.records import LayerMI, read_records

__version__ = "0.2.0"

__all__ = [
    "InformationPlane",
    "JsonlSink",
    "LayerMI",
    "RunDir",
    "conditional_entropy",
    "entropy",
    "find_quant_layers",
    "joint_entropy",
    "mutual_information",
    "read_records",
]

# torch and brevitas load only when the monitor is used, so the light parts
# (functional, records, the TensorBoard plugin) import fast and alone.
_LAZY = {
    "InformationPlane": "ib_brevitas.monitor",
    "JsonlSink": "ib_brevitas.sinks",
    "find_quant_layers": "ib_brevitas.layers",
    "RunDir": "ib_brevitas.rundir",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ib_brevitas' has no attribute {name!r}")
