"""Run ONE repetition of the paper code's SYN experiment (quantized, exact MI), unchanged.

Runs under the paper code's own TensorFlow environment, not the project's venv:

    TF_USE_LEGACY_KERAS=1 /path/to/tf-venv/bin/python benchmarks/paper_code/run_one.py \
        --paper-code /path/to/ExactIBAnalysisInQNNs --act relu --bits 8 --rep 1 \
        --epochs 8000 --data ../shared/data/var_u.mat --out /path/to/paper-out/SYN-ReLU/8/

It calls `IB.experiment.run_experiment` exactly as the paper's `experiment/helpers/quantize.py`
does for `SYN-<Act> <bits>` (model `ShwartzZiv99`, `QuantizedEstimator(bounds="layer")`, lr 1e-4,
batch 256, MI every 5 epochs at 8000 epochs), for repetition REP only (seed 1000 + REP - 1, as in
its 50-repetition loop), so that repetitions can run as separate processes. Three things are
replaced, none of which changes what is trained or measured:

* `IB.experiment.Pool(16)` (post-hoc MI over the stored activations) by a serial map;
* the data loader reads `--data` (the same `var_u.mat`; md5 checked by run_paper_code.sh)
  instead of the copy inside the paper repository;
* monitoring: after each MI epoch the callback also records every layer's activation-quantizer
  range (TF-MOT's moving-average min/max variables) into `<out>/qrange/<rep>.csv`. It reads
  variables only; training is untouched.
"""

import argparse
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper-code", required=True, help="checkout of StephanLorenzen/ExactIBAnalysisInQNNs")
    ap.add_argument("--act", choices=("tanh", "relu"), required=True)
    ap.add_argument("--bits", type=int, default=8, choices=(4, 8))
    ap.add_argument("--rep", type=int, required=True, help="repetition 1..50 (seed 1000 + rep - 1)")
    ap.add_argument("--epochs", type=int, default=8000)
    ap.add_argument("--data", required=True, help="var_u.mat of Shwartz-Ziv & Tishby")
    ap.add_argument("--out", required=True, help="output dir (the paper's out/quantized/SYN-<Act>/<bits>/)")
    args = ap.parse_args()
    if not os.path.isfile(args.data):
        sys.exit(f"run_one.py: error: --data {args.data}: no such file")
    if not os.path.isdir(os.path.join(args.paper_code, "IB")):
        sys.exit(f"run_one.py: error: --paper-code {args.paper_code}: no IB/ package inside")
    sys.path.insert(0, os.path.abspath(args.paper_code))

    import IB.data as IBdata
    import IB.experiment as IBexp
    import numpy as np
    import pandas as pd
    from IB.models import callbacks
    from IB.models import load as load_model
    from IB.util.estimator import QuantizedEstimator
    from scipy import io

    class SerialPool:  # replaces multiprocessing.Pool(16): same results, one core
        def __init__(self, *a, **k):
            pass

        def map(self, f, xs):
            return [f(x) for x in xs]

    IBexp.Pool = SerialPool

    def load_var_u():
        data = io.loadmat(args.data)
        return data["F"], data["y"].squeeze()

    IBdata._load_tishby_data = load_var_u

    qrows = []
    orig_end = callbacks.TrainingTracker.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        orig_end(self, epoch, logs)
        if epoch % self.compute_MI_freq == 0 and not self.model.stop_training:
            row = {"epoch": epoch}
            for i, layer in enumerate(self.model.layers[1:]):
                for w in layer.weights:
                    n = w.name.split("/")[-1].split(":")[0]
                    if n.endswith("_min") or n.endswith("_max"):
                        row[f"layer_{i + 1}_{n}"] = float(w.numpy())
            qrows.append(row)

    callbacks.TrainingTracker.on_epoch_end = on_epoch_end

    _model = load_model("SYN")
    bits = args.bits

    def Model():
        qrows.clear()  # a restarted repetition (bad fit) starts its record again
        return _model(activation=args.act, quantize=(bits <= 16), num_bits=bits), (bits <= 16)

    out = args.out.rstrip("/") + "/"
    t0 = time.time()
    IBexp.run_experiment(Model, [QuantizedEstimator(bounds="layer", bits=bits)], "SYN",
                         epochs=args.epochs, repeats=args.rep, start_from=args.rep,
                         low_memory=False, out_path=out)
    os.makedirs(out + "qrange", exist_ok=True)
    pd.DataFrame(qrows).to_csv(out + "qrange/" + IBexp._zp(args.rep) + ".csv", index=False)
    with open(out + "timing.txt", "a") as f:
        f.write(f"rep {args.rep} act {args.act} bits {bits} epochs {args.epochs} wall_s {time.time() - t0:.1f}\n")
    print(f"done rep {args.rep} in {time.time() - t0:.1f} s", np.__version__)


if __name__ == "__main__":
    main()
