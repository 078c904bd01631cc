"""Moved to `ib_brevitas.experiments.models` in 0.2 (the paper's application); this alias warns and re-exports."""

import warnings

from ib_brevitas.experiments import models as _moved

warnings.warn("ib_brevitas.models moved to ib_brevitas.experiments.models; import it from there",
              DeprecationWarning, stacklevel=2)
globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
