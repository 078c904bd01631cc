"""Moved to `ib_brevitas.experiments.fastpath` in 0.2 (the paper's application); this alias warns and re-exports."""

import warnings

from ib_brevitas.experiments import fastpath as _moved

warnings.warn("ib_brevitas.fastpath moved to ib_brevitas.experiments.fastpath; import it from there",
              DeprecationWarning, stacklevel=2)
globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
