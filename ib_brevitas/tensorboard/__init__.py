"""TensorBoard side of ib-brevitas: a sink that writes exact-MI records into event
files, and the `information_plane` dashboard that reads them back.

This module stays import-light (no torch): TensorBoard imports the plugin
package at start-up, and the writing sink is only loaded when asked for.
The tag and plugin names below are the on-disk contract between both halves.
"""

from __future__ import annotations

from pathlib import Path

PLUGIN_NAME = "information_plane"
# Wire format 2: one numeric tensor per measurement, all layers (see `wire`).
MEASUREMENTS_TAG_PREFIX = "information_plane/measurements/"
# Wire format 1 (still read): one JSON datum per layer and measurement.
LAYER_TAG_PREFIX = "information_plane/layer/"
PHASES_TAG = "information_plane/phases"
HARDWARE_TAG = "information_plane/hardware"
# Version of the wire format written into every series' plugin metadata; read and checked.
WIRE_VERSION = 2
SCHEMA_VERSION = WIRE_VERSION  # the name this constant had before wire format 2
# The frontend: ES modules and a stylesheet, served by the plugin and inlined by `plot --html`.
STATIC_DIR = Path(__file__).resolve().parent / "static"

__all__ = [
    "PLUGIN_NAME",
    "MEASUREMENTS_TAG_PREFIX",
    "LAYER_TAG_PREFIX",
    "PHASES_TAG",
    "HARDWARE_TAG",
    "WIRE_VERSION",
    "SCHEMA_VERSION",
    "TensorBoardSink",
]


def __getattr__(name: str):
    # Lazy: the sink imports torch, the plugin must not.
    if name == "TensorBoardSink":
        from ib_brevitas.tensorboard.summary import TensorBoardSink

        return TensorBoardSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
