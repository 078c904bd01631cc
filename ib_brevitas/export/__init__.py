"""Export to QONNX/QCDQ and FINN, and the checks that the graph computes the analysed integers.

Main environment: `to_qonnx`, `to_qcdq`, `verify` -> `ExportReport`.
FINN (its own environment, through a subprocess): `finn_estimate` -> `HardwareReport`.

The names load on first use, so `ib-brevitas export --help` and `finn-setup`
do not pay for importing torch and onnx.
"""

from __future__ import annotations

import importlib
import sys
import types

_HOMES = {
    "FinnEnvironmentMissing": "finn_bridge", "finn_estimate": "finn_bridge",
    "to_qcdq": "qonnx", "to_qonnx": "qonnx",
    "ExportReport": "report", "HardwareLayer": "report", "HardwareReport": "report", "LayerCheck": "report",
    "verify": "verify",
}

__all__ = [
    "ExportReport",
    "FinnEnvironmentMissing",
    "HardwareLayer",
    "HardwareReport",
    "LayerCheck",
    "finn_estimate",
    "to_qcdq",
    "to_qonnx",
    "verify",
]


class _Package(types.ModuleType):
    """`ib_brevitas.export.verify` is the function, even after its submodule of the same name loads
    (the import system then sets the package attribute to the submodule; the setter ignores that)."""

    @property
    def verify(self):
        return importlib.import_module(f"{__name__}.verify").verify

    @verify.setter
    def verify(self, _value) -> None:
        pass


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


sys.modules[__name__].__class__ = _Package
