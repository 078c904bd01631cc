"""A real bnn_pynq TFC-2W2A as a LightningModule on digits, for the Lightning and DDP tests.

`python tests/lightning_tfc.py ddp OUT_DIR EPOCHS` trains it with
`strategy="ddp"` on two CPU processes (Lightning re-launches this script for
rank 1) with the callback, and leaves the run under OUT_DIR/lit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

PROBE = 400  # probe samples: the first PROBE digits
TRAIN = 512  # training samples: the next TRAIN digits


def digits():
    from ib_brevitas.experiments.data import digits_as_mnist

    x, y = digits_as_mnist()
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


def probe_set():
    x, y = digits()
    return x[:PROBE], y[:PROBE]


def tfc():
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    return model_with_cfg("tfc_2w2a", pretrained=False)[0]


class LitTFC(pl.LightningModule):
    """TFC-2W2A with Adam; the RNG is reseeded each epoch so a resumed fit trains exactly as an uninterrupted one."""

    def __init__(self, seed: int = 0, lr: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()  # config.json's model factory for ib-brevitas export
        torch.manual_seed(seed)
        self.model = tfc()
        self.seed, self.lr = seed, lr

    def forward(self, x):
        return self.model(x)

    def on_train_epoch_start(self):
        torch.manual_seed(self.seed * 1000 + self.current_epoch)  # dropout masks independent of any resume

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        x, y = digits()
        return DataLoader(TensorDataset(x[PROBE : PROBE + TRAIN], y[PROBE : PROBE + TRAIN]), batch_size=64)

    def val_dataloader(self):
        x, y = digits()
        return DataLoader(TensorDataset(x[-128:], y[-128:]), batch_size=128)


def trainer(root: Path, callbacks, max_epochs: int, validate: bool = True, version=None, **kwargs) -> pl.Trainer:
    from lightning.pytorch.loggers import TensorBoardLogger

    return pl.Trainer(
        max_epochs=max_epochs, accelerator="cpu", logger=TensorBoardLogger(str(root), name="lit", version=version),
        callbacks=callbacks if isinstance(callbacks, list) else [callbacks], deterministic=True,
        enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=1 if validate else 0, **kwargs,
    )


def _ddp(out: Path, epochs: int) -> None:
    from ib_brevitas.integrations.lightning import InformationPlaneCallback

    torch.set_num_threads(1)
    x, y = probe_set()
    cb = InformationPlaneCallback(x, y, every_n_epochs=1)
    t = trainer(out, cb, epochs, strategy="ddp", devices=2)
    t.fit(LitTFC(seed=0))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    import lightning_tfc  # the classes by their importable name (config.json's factory), not __main__

    if sys.argv[1] == "ddp":
        lightning_tfc._ddp(Path(sys.argv[2]), int(sys.argv[3]))
