"""Static facts about a run that the rules need besides the series: which parameters are weight
matrices, which modules are ReLU-like or dropout, what the criterion is, which instruments ran.

They are collected once when ``watch()`` attaches (:func:`collect`, the only code here that
touches torch objects, imported lazily) and stored in the run's metadata under
``meta["diagnosis"]["facts"]``, so that ``avionics diagnose`` re-runs the rules on a saved run
without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from instrument.store.schema import DKeys

# module kinds the rules care about
RELU, BOUNDED, DROPOUT, BATCHNORM, LINEAR, CONV, EMBEDDING, NORM, SHAPE, OTHER = (
    "relu", "bounded", "dropout", "batchnorm", "linear", "conv", "embedding", "norm", "shape",
    "other")
WEIGHT_KINDS = (LINEAR, CONV, EMBEDDING, NORM, BATCHNORM)
"""Module kinds with learned weights that transform their input."""

# criterion kinds
CROSS_ENTROPY, NLL, BCE, BCE_LOGITS, OTHER_LOSS = "cross_entropy", "nll", "bce", "bce_logits", \
    "other"
CLASSIFIERS = (CROSS_ENTROPY, NLL)
"""Criteria whose chance-level loss is ln(number of classes)."""


@dataclass
class RunFacts:
    """What the rules know about the model, optimizer and criterion (JSON-serializable)."""

    # {name, shape, trainable, in_optimizer, in_model, group, module, kind}, context order
    params: list = field(default_factory=list)
    modules: list = field(default_factory=list)  # {name, type, kind}, model order
    criterion: dict | None = None  # {class, kind, reduction, ignore_index}
    instruments: list = field(default_factory=list)  # instruments that record at some step
    optimizer: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> RunFacts:
        d = d or {}
        return cls(params=list(d.get("params", [])), modules=list(d.get("modules", [])),
                   criterion=d.get("criterion"), instruments=list(d.get("instruments", [])),
                   optimizer=d.get("optimizer"))

    @classmethod
    def from_meta(cls, meta: dict) -> RunFacts:
        """Facts of a saved run; older runs without them get what the generic meta tells."""
        diag = meta.get("diagnosis") or {}
        if "facts" in diag:
            return cls.from_dict(diag["facts"])
        modules = [{"name": m["name"], "type": m["type"], "kind": kind_of_type(m["type"])}
                   for m in (meta.get("model") or {}).get("layers", [])]
        return cls(modules=modules, instruments=list(meta.get("instruments", [])),
                   optimizer=(meta.get("optimizer") or {}).get("class"))

    # ---- queries ------------------------------------------------------------------------------
    def has(self, instrument: str) -> bool:
        return instrument in self.instruments

    def param(self, name: str) -> dict | None:
        for p in self.params:
            if p["name"] == name:
                return p
        return None

    def weight_matrices(self) -> list:
        """Names of trainable parameters with two or more dimensions, outside embeddings (whose
        gradients and updates touch only the rows a batch uses), in model order."""
        return [p["name"] for p in self.params
                if p["trainable"] and len(p["shape"]) >= 2 and p["kind"] != EMBEDDING]

    def modules_of_kind(self, *kinds) -> list:
        return [m["name"] for m in self.modules if m["kind"] in kinds]

    @property
    def output_module(self) -> str | None:
        """The last leaf module in model order: the one whose output is usually the model's."""
        return self.modules[-1]["name"] if self.modules else None

    @property
    def classifier(self) -> bool:
        return bool(self.criterion) and self.criterion.get("kind") in CLASSIFIERS

    def set_frozen(self, frozen) -> None:
        """Parameters were frozen or unfrozen during the run (an ``optimizer_changed`` event):
        ``frozen`` names those that no longer require grad; every other one does."""
        frozen = set(frozen)
        for p in self.params:
            p["trainable"] = p["name"] not in frozen

    def loss_kind(self, h, n: int = 1, first: bool = False) -> str | None:
        """The kind of loss the criterion and logits series of history ``h`` belong to.

        With a criterion module, its class decides. Captured losses (no ``loss_fn``) are
        ``F.cross_entropy`` or ``F.nll_loss`` calls, and the criterion instrument records which
        (:attr:`DKeys.CRIT_NLL`): NLL when the records read (the run's first with ``first``,
        else the last ``n``) all say so, cross-entropy when none does, None when they disagree.
        Runs recorded before that series existed captured cross-entropy only.
        """
        crit = self.criterion or {}
        if not crit.get("captured") or not h.count(DKeys.CRIT_NLL):
            return crit.get("kind")
        values = h.first(DKeys.CRIT_NLL)[:1] if first else h.scalar(DKeys.CRIT_NLL, n)[1]
        if not len(values):
            return crit.get("kind")
        if np.all(values == 1):
            return NLL
        return CROSS_ENTROPY if np.all(values == 0) else None


_TYPE_KINDS = {
    RELU: ("ReLU", "ReLU6", "Threshold"),
    BOUNDED: ("Tanh", "Sigmoid", "Softsign", "Hardsigmoid", "Hardtanh"),
    DROPOUT: ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
              "FeatureAlphaDropout"),
    BATCHNORM: ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm1d",
                "LazyBatchNorm2d", "LazyBatchNorm3d"),
    LINEAR: ("Linear", "Bilinear", "LazyLinear", "Conv1D", "NonDynamicallyQuantizableLinear"),
    CONV: ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
           "LazyConv1d", "LazyConv2d", "LazyConv3d"),
    EMBEDDING: ("Embedding", "EmbeddingBag"),
    NORM: ("LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
           "RMSNorm", "LocalResponseNorm"),
    SHAPE: ("Flatten", "Unflatten", "Identity"),
}
_KIND_OF = {t: kind for kind, types in _TYPE_KINDS.items() for t in types}


def kind_of_type(type_name: str) -> str:
    """The rule-relevant kind of a module class name (``"other"`` if none)."""
    return _KIND_OF.get(type_name, OTHER)


def module_kind(module) -> str:
    """Kind of a live module: by isinstance against torch classes, so subclasses count too."""
    from torch import nn

    checks = (
        (RELU, (nn.ReLU, nn.ReLU6, nn.Threshold)),
        (BOUNDED, (nn.Tanh, nn.Sigmoid, nn.Softsign, nn.Hardsigmoid)),
        (DROPOUT, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                   nn.FeatureAlphaDropout)),
        (BATCHNORM, (nn.modules.batchnorm._BatchNorm,)),
        (LINEAR, (nn.Linear, nn.Bilinear)),
        (CONV, (nn.modules.conv._ConvNd,)),
        (EMBEDDING, (nn.Embedding, nn.EmbeddingBag)),
        (NORM, (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
                nn.LocalResponseNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())),
        (SHAPE, (nn.Flatten, nn.Unflatten, nn.Identity)),
    )
    if isinstance(module, nn.Hardtanh) and not isinstance(module, nn.ReLU6):
        # Hardtanh(-1, 1) saturates like tanh; other ranges (ReLU6 = Hardtanh(0, 6)) are ReLU-like
        return BOUNDED if module.min_val < 0 else RELU
    for kind, types in checks:
        if isinstance(module, types):
            return kind
    # a layer class torch does not know (transformers' Conv1D in GPT-2, custom projections)
    # that owns a weight matrix transforms its input like a Linear layer
    weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
    if weight is not None and weight.dim() == 2 and not list(module.children()):
        return LINEAR
    return OTHER


def _criterion(loss_fn) -> dict | None:
    if loss_fn is None:
        return None
    from torch import nn

    kind = OTHER_LOSS
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        kind = CROSS_ENTROPY
    elif isinstance(loss_fn, nn.NLLLoss):
        kind = NLL
    elif isinstance(loss_fn, nn.BCEWithLogitsLoss):
        kind = BCE_LOGITS
    elif isinstance(loss_fn, nn.BCELoss):
        kind = BCE
    return {"class": type(loss_fn).__name__, "kind": kind,
            "reduction": getattr(loss_fn, "reduction", "mean"),
            "ignore_index": getattr(loss_fn, "ignore_index", None)}


def collect(ctx, active_instruments) -> RunFacts:
    """The facts of a live run from the monitor's Context (called by ``watch()``).

    Args:
        ctx: the :class:`instrument.context.Context`.
        active_instruments: names of the instruments that record at some step.
    """
    held = set(ctx.opt_params)
    in_model = {id(p) for p in ctx.model.parameters()}
    modules = [{"name": n, "type": type(m).__name__, "kind": module_kind(m)}
               for n, m in zip(ctx.module_names, ctx.modules)]
    params = []
    for i, (name, p) in enumerate(zip(ctx.param_names, ctx.params)):
        owner = ctx.param_owner[i]
        params.append({
            "name": name, "shape": [int(s) for s in p.shape],
            "trainable": bool(p.requires_grad), "in_optimizer": i in held,
            "in_model": id(p) in in_model, "group": ctx.group_of.get(i),
            "module": modules[owner]["name"] if owner >= 0 else None,
            "kind": modules[owner]["kind"] if owner >= 0 else OTHER,
        })
    return RunFacts(params=params, modules=modules, criterion=_criterion(ctx.loss_fn),
                    instruments=list(active_instruments),
                    optimizer=type(ctx.optimizer).__name__ if ctx.optimizer is not None else None)
