"""Lightning + AvionicsCallback under both import names, against a reference callback that
measures the gradients itself (real Lightning, CPU)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

import instrument
from tests.integrations.lit_models import loaders, module_classes, reference_callback
from tests.integrations.quiet import assert_quiet

pytestmark = pytest.mark.integrations

CLIP = 0.05
"""gradient_clip_val small enough that every step clips."""


def _packages():
    """(Lightning package, avionics integration module) for each installed import name."""
    out = []
    for pl_name, ours in (("lightning.pytorch", "instrument.integrations.lightning"),
                          ("pytorch_lightning", "instrument.integrations.pytorch_lightning")):
        try:
            out.append(pytest.param((importlib.import_module(pl_name),
                                     importlib.import_module(ours)), id=pl_name))
        except ImportError as exc:
            out.append(pytest.param(None, id=pl_name, marks=pytest.mark.skip(str(exc))))
    return out


@pytest.fixture(params=_packages())
def lit(request):
    return request.param


def _trainer(pl, tmp_path, callbacks, **kw):
    base = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, log_every_n_steps=1, num_sanity_val_steps=0,
                limit_val_batches=2, default_root_dir=str(tmp_path))
    return pl.Trainer(callbacks=callbacks, **{**base, **kw})


def _series(run, key):
    df = run.scalars(keys=[key])
    return {int(s): float(v) for s, v in zip(df["step"], df["value"])}


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_accumulation_and_clipping_match_reference(lit, tmp_path, precision):
    pl, ours = lit
    Classifier, _ = module_classes(pl)
    train, val = loaders()
    run_dir = str(tmp_path / "run")
    cb, ref = ours.AvionicsCallback(run=run_dir, strict=True), reference_callback(pl)
    trainer = _trainer(pl, tmp_path, [cb, ref], accumulate_grad_batches=2,
                       gradient_clip_val=CLIP, precision=precision)
    trainer.fit(Classifier(), train, val)
    run = instrument.load(run_dir)
    steps = trainer.global_step
    assert steps == 8 and run.meta["steps"] == steps
    before = _series(run, ours.BEFORE_CLIP)
    assert sorted(before) == sorted(ref.before) == list(range(steps))
    for s in range(steps):
        assert before[s] == pytest.approx(ref.before[s], abs=1e-4, rel=1e-4)
        assert ref.before[s] > CLIP
    # self.log() metrics: every training step, validation after the epoch's last step
    acc = _series(run, "train_acc")
    assert sorted(acc) == list(range(steps)) and all(0 <= v <= 1 for v in acc.values())
    val_loss = _series(run, "val_loss")
    assert list(val_loss) == [steps - 1]
    assert val_loss[steps - 1] == pytest.approx(float(trainer.callback_metrics["val_loss"]),
                                                rel=1e-6)
    assert "lightning/train_loss" not in run.keys() and "train_loss" in run.keys()


def test_gradient_is_read_after_the_closure(lit, tmp_path):
    """``grad_norm/total`` is the gradient the step used: Lightning runs forward, backward and
    clipping inside ``optimizer.step(closure)``, so it must be read after the closure ran."""
    pl, ours = lit
    Classifier, _ = module_classes(pl)
    train, _ = loaders()
    run_dir = str(tmp_path / "run")
    ref = reference_callback(pl)
    trainer = _trainer(pl, tmp_path, [ours.AvionicsCallback(run=run_dir, strict=True), ref],
                       accumulate_grad_batches=2, gradient_clip_val=CLIP, limit_val_batches=0)
    trainer.fit(Classifier(), train)
    after = _series(instrument.load(run_dir), "grad_norm/total")
    assert sorted(after) == sorted(ref.after) == list(range(trainer.global_step))
    for s in sorted(after):
        assert after[s] == pytest.approx(ref.after[s], abs=1e-4, rel=1e-4)
        assert after[s] == pytest.approx(CLIP, rel=1e-4)


def test_loss_is_the_undivided_training_step_loss(lit, tmp_path):
    """Brute force: replay the same batches through a copy of the initial model; step 0's
    ``loss`` is the mean of the two micro-batches' cross-entropies (Lightning divides them by
    accumulate_grad_batches for backward only)."""
    pl, ours = lit
    Classifier, _ = module_classes(pl)
    train, _ = loaders()
    reference = Classifier()
    run_dir = str(tmp_path / "run")
    trainer = _trainer(pl, tmp_path, [ours.AvionicsCallback(run=run_dir, strict=True)],
                       accumulate_grad_batches=2, max_steps=1, limit_val_batches=0)
    trainer.fit(Classifier(), train)
    batches = iter(train)
    with torch.no_grad():
        expected = sum(float(torch.nn.functional.cross_entropy(reference(x), y))
                       for x, y in (next(batches), next(batches))) / 2
    assert _series(instrument.load(run_dir), "loss")[0] == pytest.approx(expected, rel=1e-5)


def test_manual_optimization(lit, tmp_path):
    pl, ours = lit
    _, Manual = module_classes(pl)
    train, val = loaders(n=48)
    run_dir = str(tmp_path / "run")
    module = Manual()
    trainer = _trainer(pl, tmp_path, [ours.AvionicsCallback(run=run_dir, strict=True)])
    trainer.fit(module, train, val)
    run = instrument.load(run_dir)
    assert trainer.global_step == 6 and run.meta["steps"] == 6
    norms = _series(run, "grad_norm/total")
    assert sorted(norms) == list(range(6))
    for s in range(6):
        assert norms[s] == pytest.approx(module.grad_norms[s], rel=1e-5)
    assert ours.BEFORE_CLIP not in run.keys()  # no gradient_clip_val: nothing differs
    assert sorted(_series(run, "loss")) == list(range(6))
    assert sorted(_series(run, "train_loss")) == list(range(6))
    assert _series(run, "lightning/loss") == pytest.approx(_series(run, "loss"), rel=1e-6)


def test_training_unchanged(lit, tmp_path):
    pl, ours = lit
    Classifier, _ = module_classes(pl)
    train, _ = loaders()
    models = []
    for callbacks in ([], [ours.AvionicsCallback(run=str(tmp_path / "run"), strict=True)]):
        model = Classifier()
        _trainer(pl, tmp_path, callbacks, accumulate_grad_batches=2, gradient_clip_val=CLIP,
                 limit_val_batches=0).fit(model, train)
        models.append(model)
    for (name, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_healthy_lightning_mlp_is_quiet(tmp_path):
    """A Lightning MLP on the digits data (standardized, shuffled), default Trainer settings
    but for the device and the console: no warnings or criticals from the diagnosis."""
    lightning = pytest.importorskip("lightning.pytorch")
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    from instrument.integrations.lightning import AvionicsCallback

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)

    class MLP(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                           torch.nn.Linear(64, 10))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    run_dir = str(tmp_path / "run")
    trainer = lightning.Trainer(accelerator="cpu", devices=1, max_epochs=3, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=str(tmp_path),
                                callbacks=[AvionicsCallback(run=run_dir, strict=True)])
    trainer.fit(MLP(), data)
    losses = _series(instrument.load(run_dir), "loss")
    assert len(losses) == trainer.global_step and math.isfinite(losses[max(losses)])
    assert losses[max(losses)] < 0.5 * losses[0]  # it learned
    assert_quiet(run_dir)


def test_backbone_finetuning_unfreezing_is_followed(lit, tmp_path):
    """Lightning's BackboneFinetuning freezes ``module.backbone`` and, at the given epoch,
    unfreezes it with add_param_group: the backbone's update norms are recorded from that
    step on and equal the change of its weights, measured by the test's own callback."""
    pl, ours = lit

    class Finetuned(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.backbone = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh())
            self.head = torch.nn.Linear(16, 3)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.head(self.backbone(x)), y)

        def configure_optimizers(self):
            return torch.optim.Adam(filter(lambda p: p.requires_grad, self.parameters()),
                                    lr=1e-2)

    class Moves(pl.Callback):  # the reference: the backbone weight's change per step
        def __init__(self):
            self.before, self.moves = None, []

        def on_before_optimizer_step(self, trainer, module, optimizer):
            self.before = module.backbone[0].weight.detach().clone()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.moves.append(torch.linalg.vector_norm(
                module.backbone[0].weight.detach() - self.before).item())

    run_dir = str(tmp_path / "run")
    moves = Moves()
    unfreeze = pl.callbacks.BackboneFinetuning(unfreeze_backbone_at_epoch=1,
                                               backbone_initial_ratio_lr=0.1)
    train, _ = loaders(n=32)
    _trainer(pl, tmp_path, [ours.AvionicsCallback(run=run_dir, strict=True), unfreeze, moves],
             max_epochs=2, limit_val_batches=0).fit(Finetuned(), train)
    run = instrument.load(run_dir)
    df = run.layers(keys=["update_norm"])
    got = {int(s): v for s, layer, v in zip(df["step"], df["layer"], df["value"])
           if layer == "backbone.0.weight"}
    per_epoch = len(moves.moves) // 2
    for step, want in enumerate(moves.moves):
        if step < per_epoch:  # frozen: not held by the optimizer, not recorded
            assert want == 0.0 and math.isnan(got.get(step, math.nan)), step
        else:
            assert got[step] == pytest.approx(want, rel=1e-4), step
    ev = run.events(codes=["optimizer_changed"])
    assert ev["step"].tolist() == [per_epoch]
