"""ib-brevitas: exact information-plane analysis of quantized Brevitas networks.

Data path, one direction: probe batch -> hooks -> integer codes (`codes`) ->
counts and MI (`functional`) -> `LayerMI` records (`records`) -> sinks
(JSONL, TensorBoard, plots, phase detection, export reports).
"""

from ib_brevitas.functional import (
    conditional_entropy,
    entropy,
    joint_entropy,
    mutual_information,
)
from ib_brevitas.records import LayerMI, read_records

__version__ = "0.1.0"

__all__ = [
    "InformationPlane",
    "JsonlSink",
    "LayerMI",
    "conditional_entropy",
    "entropy",
    "find_quant_layers",
    "joint_entropy",
    "mutual_information",
    "read_records",
]


def __getattr__(name):
    # torch and brevitas load only when the monitor is used, so the light parts
    # (functional, records, the TensorBoard plugin) import fast and alone.
    if name in ("InformationPlane", "JsonlSink"):
        from ib_brevitas import monitor

        return getattr(monitor, name)
    if name == "find_quant_layers":
        from ib_brevitas.layers import find_quant_layers

        return find_quant_layers
    raise AttributeError(f"module 'ib_brevitas' has no attribute {name!r}")
