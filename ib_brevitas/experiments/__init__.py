"""The paper's application, built on the library (as `brevitas_examples` is on `brevitas`).

Lorenzen, Igel & Nielsen (ICLR 2022): the SYN data generator and the data loaders
(`data`), the paper's networks (`models`), the exact fast training engine
(`fastpath`) and the presets behind `ib-brevitas train` (`train`). Nothing in the
library imports this package.
"""
