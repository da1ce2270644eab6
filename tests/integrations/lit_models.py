"""Small LightningModules for either import name (``lightning.pytorch``, ``pytorch_lightning``)
and synthetic data; a reference callback that measures gradients independently of avionics."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def loaders(n: int = 128, batch: int = 8, seed: int = 0, features: int = 8, classes: int = 3):
    """Train and validation loaders of a learnable problem (class = argmax of 3 fixed
    projections), in a fixed order (no shuffling: both runs of a comparison see the same)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(features, classes, generator=g)
    x = torch.randn(n, features, generator=g)
    y = (x @ w).argmax(1)
    xv = torch.randn(32, features, generator=g)
    yv = (xv @ w).argmax(1)
    return (DataLoader(TensorDataset(x, y), batch_size=batch),
            DataLoader(TensorDataset(xv, yv), batch_size=16))


def module_classes(pl):
    """``(Classifier, ManualClassifier)`` subclassing ``pl.LightningModule``."""

    class Classifier(pl.LightningModule):
        def __init__(self, lr: float = 0.05, seed: int = 0):
            super().__init__()
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
            self.lr = lr

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            loss = nn.functional.cross_entropy(logits, y)
            self.log("train_acc", (logits.argmax(1) == y).float().mean())
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    class ManualClassifier(Classifier):
        """Manual optimization; ``grad_norms`` holds the brute-force norm at each step."""

        def __init__(self, **kw):
            super().__init__(**kw)
            self.automatic_optimization = False
            self.grad_norms = []

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            opt.zero_grad()
            self.manual_backward(loss)
            self.grad_norms.append(brute_norm(self))
            opt.step()
            self.log("train_loss", loss)
            self.log("loss", loss)  # a name avionics records itself: kept as lightning/loss
            return loss

    return Classifier, ManualClassifier


def brute_norm(module) -> float:
    """The global L2 norm of the gradients, in float64 on the host."""
    return sum(float(p.grad.double().pow(2).sum()) for p in module.parameters()
               if p.grad is not None) ** 0.5


def reference_callback(pl):
    """A callback that records, by optimizer step (``global_step`` before it), the gradient norm
    in ``on_before_optimizer_step`` (after backward and accumulation, before clipping) and the
    norm after the step (the clipped gradient the optimizer used; zero_grad comes later)."""

    class Reference(pl.Callback):
        def __init__(self):
            self.before, self.after, self._seen = {}, {}, 0

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.before[trainer.global_step] = brute_norm(pl_module)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step > self._seen:  # an optimizer step happened in this batch
                self._seen = trainer.global_step
                self.after[trainer.global_step - 1] = brute_norm(pl_module)

    return Reference()
