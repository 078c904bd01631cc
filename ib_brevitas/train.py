"""Moved to `ib_brevitas.experiments.train` (the CLI) and `.paper_run` (build_run, train_epoch, ...) in 0.2;
this alias warns and re-exports both."""

import warnings

from ib_brevitas.experiments import paper_run as _run
from ib_brevitas.experiments import train as _moved

warnings.warn("ib_brevitas.train moved to ib_brevitas.experiments.train (CLI) and ib_brevitas.experiments.paper_run",
              DeprecationWarning, stacklevel=2)
globals().update({k: v for m in (_run, _moved) for k, v in vars(m).items() if not k.startswith("__")})
