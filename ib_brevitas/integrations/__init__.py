"""Adapters that plug `InformationPlane` into training frameworks.

`lightning`: `InformationPlaneCallback` for PyTorch Lightning (the `lightning`
extra). Each adapter imports its framework only when imported itself.
"""
