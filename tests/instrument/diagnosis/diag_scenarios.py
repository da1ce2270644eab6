"""Short real CPU training runs for the diagnosis tests: healthy ones and ones with one bug.

Everything trains on scikit-learn's bundled 8x8 digits (1797 images, 10 balanced classes, no
download): an MLP on the 64 flattened pixels or a small CNN on the 1x8x8 images. ``Config``
switches one bug on at a time; ``train`` runs the loop with avionics attached and returns the
run directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import nn

import instrument

N_TRAIN = 1500


@lru_cache(maxsize=1)
def digits():
    """Raw digits: images (N, 8, 8) in 0..16 as float32, labels (N,) int64."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (torch.tensor(d.images, dtype=torch.float32),
            torch.tensor(d.target, dtype=torch.long))


@dataclass
class Config:
    """One training run. Defaults: a healthy MLP with SGD + momentum."""

    model: str = "mlp"  # mlp, cnn, bn_cnn, dropout_mlp, tanh_mlp, deep_sigmoid, wide_mlp
    optimizer: str = "sgd"  # sgd (momentum 0.9), adam, adamw
    lr: float = 0.05
    steps: int = 300
    batch: int = 64
    schedule: str = "none"  # none, cosine, warmup, warmup_cosine, short_cosine, jump
    warmup: int = 30
    accumulate: int = 1  # micro-batches per optimizer step
    clip: float | None = None
    loss_fn: bool = True  # pass the criterion to watch()
    validate_every: int = 50  # model.eval() + no_grad validation, then model.train()
    seed: int = 0
    bugs: set = field(default_factory=set)
    thresholds: dict | None = None
    schedules: dict | None = None

    # bugs (each switched on by name in ``bugs``):
    #   no_zero_grad, eval_mode, softmax_into_ce, unshuffled, repeated_batch, raw_pixels,
    #   shuffled_labels, unused_layer, not_in_optimizer, big_last_layer, dead_bias,
    #   tiny_init, huge_init, log_softmax_into_ce, nll_on_logits, log_input, frozen_in_optimizer


def _tanh_mlp() -> nn.Module:
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 32), nn.Tanh(),
                      nn.Linear(32, 10))
    for layer in m:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return m


def _deep_sigmoid() -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(64, 32), nn.Sigmoid()]
    for _ in range(7):
        layers += [nn.Linear(32, 32), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(32, 10))


MODELS = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32),
                                 nn.ReLU(), nn.Linear(32, 10)),
    "wide_mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(),
                                      nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)),
    "dropout_mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(),
                                         nn.Dropout(0.2), nn.Linear(64, 10)),
    "tanh_mlp": _tanh_mlp,
    "deep_sigmoid": _deep_sigmoid,
    "cnn": lambda: nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(),
                                 nn.Linear(32, 10)),
    "bn_cnn": lambda: nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16),
                                    nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.1),
                                    nn.Linear(16 * 16, 10)),
}
"""The scenario models by name (built after seeding, in make_model)."""


def _seed_init_bugs(linears: list, bugs) -> None:
    """The initialization bugs, applied in place."""
    with torch.no_grad():
        if "big_last_layer" in bugs:
            linears[-1].weight.mul_(50.0)
        if "dead_bias" in bugs:
            linears[0].bias.fill_(-4.0)
        if "tiny_init" in bugs:  # "small random numbers": N(0, 0.01), zero biases
            for layer in linears:
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)
        if "huge_init" in bugs:
            for layer in linears[1:-1] or linears:
                layer.weight.mul_(60.0)


def make_model(cfg: Config) -> nn.Module:
    torch.manual_seed(cfg.seed)
    if cfg.model not in MODELS:
        raise ValueError(cfg.model)
    m = MODELS[cfg.model]()
    linears = [layer for layer in m if isinstance(layer, nn.Linear)]
    _seed_init_bugs(linears, cfg.bugs)
    if "frozen_in_optimizer" in cfg.bugs:  # frozen, yet handed to the optimizer below
        linears[0].requires_grad_(False)
    if "unused_layer" in cfg.bugs:
        m = WithUnused(m)
    if "log_input" in cfg.bugs:
        m = nn.Sequential(LogFeatures(), *m)
    return m


class WithUnused(nn.Module):
    """A model with a layer that forward() never calls (a leftover auxiliary head)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.aux_head = nn.Linear(10, 10)

    def forward(self, x):
        return self.net(x)


class LogFeatures(nn.Module):
    """log(x) as a feature transform: NaN for the negative values of standardized inputs."""

    def forward(self, x):
        return torch.log(x)


def make_optimizer(cfg: Config, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    raise ValueError(cfg.optimizer)


def lr_factor(cfg: Config, step: int) -> float:
    """Multiplier of the base learning rate at ``step`` for ``cfg.schedule``."""
    s, n, w = step, cfg.steps, cfg.warmup
    if cfg.schedule == "none":
        return 1.0
    if cfg.schedule == "warmup":
        return min(1.0, (s + 1) / w)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * s / n))
    if cfg.schedule == "warmup_cosine":
        if s < w:
            return (s + 1) / w
        return 0.5 * (1 + math.cos(math.pi * (s - w) / max(1, n - w)))
    if cfg.schedule == "short_cosine":  # T_max a third of the run: climbs back up after
        return 0.5 * (1 + math.cos(math.pi * s / (n / 3)))
    if cfg.schedule == "jump":  # the learning rate is multiplied by 40 halfway
        return 1.0 if s < n // 2 else 40.0
    raise ValueError(cfg.schedule)


def batches(cfg: Config, x, y):
    """Index tensors of the batches, one per micro-batch, forever."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    if "unshuffled" in cfg.bugs:
        order = torch.argsort(y[:N_TRAIN], stable=True)  # sorted by label
        pos = 0
        while True:
            if pos + cfg.batch > N_TRAIN:
                pos = 0
            yield order[pos: pos + cfg.batch]
            pos += cfg.batch
    fixed = torch.randperm(N_TRAIN, generator=g)[: cfg.batch]
    while True:
        if "repeated_batch" in cfg.bugs:
            yield fixed
        else:
            yield torch.randint(0, N_TRAIN, (cfg.batch,), generator=g)


def prepare(cfg: Config):
    images, labels = digits()
    x = images.clone()
    if "raw_pixels" in cfg.bugs:
        x = x * 16.0  # 0..256, like unscaled 8-bit pixels
    else:
        x = (x - x[:N_TRAIN].mean()) / x[:N_TRAIN].std()
    if cfg.model in ("cnn", "bn_cnn"):
        x = x.unsqueeze(1)
    y = labels.clone()
    if "shuffled_labels" in cfg.bugs:
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(7))]
    return x, y


def train(cfg: Config, run_dir: str, *, strict: bool = True) -> dict:
    """Train with avionics attached; returns ``{"run_dir", "val_acc", "final_loss"}``."""
    torch.manual_seed(cfg.seed)
    x, y = prepare(cfg)
    model = make_model(cfg)
    opt = make_optimizer(cfg, model.parameters())
    if "not_in_optimizer" in cfg.bugs:  # a head replaced after the optimizer was created
        model[-1] = nn.Linear(model[-1].in_features, 10)
        torch.manual_seed(cfg.seed)
    if "nll_on_logits" in cfg.bugs:
        criterion = nn.NLLLoss()
    else:
        criterion = nn.CrossEntropyLoss()
    base = [g["lr"] for g in opt.param_groups]
    monitor = instrument.watch(model, opt, run=run_dir, strict=strict, overwrite=True,
                               loss_fn=criterion if cfg.loss_fn else None,
                               thresholds=cfg.thresholds, schedules=cfg.schedules)
    if "eval_mode" in cfg.bugs:
        model.eval()
    feed = batches(cfg, x, y)
    loss = torch.tensor(float("nan"))
    with monitor:
        for step in range(cfg.steps):
            for g, b in zip(opt.param_groups, base):
                g["lr"] = b * lr_factor(cfg, step)
            if "no_zero_grad" not in cfg.bugs:
                opt.zero_grad()
            for _ in range(cfg.accumulate):
                idx = next(feed)
                out = model(x[idx])
                if "softmax_into_ce" in cfg.bugs:
                    out = out.softmax(dim=1)
                elif "log_softmax_into_ce" in cfg.bugs:
                    out = out.log_softmax(dim=1)
                loss = criterion(out, y[idx])
                (loss / cfg.accumulate).backward()
                monitor.log(loss=loss)
            if cfg.clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            if cfg.validate_every and (step + 1) % cfg.validate_every == 0:
                val = evaluate(model, x, y)
                if "eval_mode" not in cfg.bugs:
                    model.train()
                monitor.log(val_acc=val)
    return {"run_dir": monitor.run_dir, "val_acc": evaluate(model, x, y),
            "final_loss": float(loss.detach())}


def evaluate(model, x, y) -> float:
    """Validation accuracy on the held-out digits (eval mode, no grad)."""
    model.eval()
    with torch.no_grad():
        return float((model(x[N_TRAIN:]).argmax(1) == y[N_TRAIN:]).float().mean())


def codes(run) -> set:
    """The event codes stored in a run."""
    return set(run.events()["code"])
