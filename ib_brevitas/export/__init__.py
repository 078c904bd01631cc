"""Export to QONNX/QCDQ and FINN, and the checks that the graph computes the analysed integers.

Main environment: `to_qonnx`, `to_qcdq`, `verify` -> `ExportReport`.
FINN (its own environment, through a subprocess): `finn_estimate` -> `HardwareReport`.
"""

from ib_brevitas.export.finn_bridge import FinnEnvironmentMissing, finn_estimate
from ib_brevitas.export.qonnx import to_qcdq, to_qonnx
from ib_brevitas.export.report import ExportReport, HardwareLayer, HardwareReport, LayerCheck

# Last, so the name `verify` is the function and not the submodule of the same name.
from ib_brevitas.export.verify import verify

__all__ = [
    "to_qonnx", "to_qcdq", "verify", "ExportReport", "LayerCheck",
    "finn_estimate", "FinnEnvironmentMissing", "HardwareReport", "HardwareLayer",
]
