"""Computations the tests compare the package against, written independently of it.

Codes straight from Brevitas hooks (not the monitor's probe pass) and MI by `np.unique`
(not the package's kernel), and the report's verdict tables read back from its Markdown: one copy
here, shared by the test files.
"""

import re

import numpy as np
import torch

from ib_brevitas.functional import entropy_from_counts


def hooked_codes(model, x, names):
    """QuantTensor.int() of each named module's act_quant, straight from forward hooks."""
    codes, handles = {}, []
    modules = dict(model.named_modules())
    for name in names:
        def hook(_m, _i, out, name=name):
            codes[name] = out.int().reshape(out.value.shape[0], -1).numpy().astype(np.int64)

        handles.append(modules[name].act_quant.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return codes


def mi_by_np_unique(codes, y):
    """(H(T), I(T;Y)) from np.unique counts of the rows, the labels and the joint rows."""
    _, t = np.unique(codes, axis=0, return_counts=True)
    _, yc = np.unique(y, return_counts=True)
    _, tyc = np.unique(np.concatenate([codes, y[:, None]], axis=1), axis=0, return_counts=True)
    h_t = entropy_from_counts(t)
    return h_t, h_t + entropy_from_counts(yc) - entropy_from_counts(tyc)


def report_verdict_tables(page: str) -> dict[str, dict[str, list[str]]]:
    """Per configuration section: layer -> the verdict table's cells."""
    out = {}
    for section in page.split("\n## ")[1:]:
        name = section.split("\n", 1)[0].strip()
        table = section.split("Verdicts per layer:\n\n")[1].split("\n\n")[0] if "Verdicts per layer:" in section else ""
        rows = [line.strip("|").split(" | ") for line in table.splitlines() if re.match(r"\| T\d ", line)]
        out[name] = {r[0].strip(): [c.strip() for c in r] for r in rows}
    return out
