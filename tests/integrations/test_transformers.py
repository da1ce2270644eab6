"""Hugging Face Trainer + AvionicsCallback, against Trainer's own log history (real
transformers, tiny models from configs, random init, CPU)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import Trainer, TrainingArguments  # noqa: E402

import instrument  # noqa: E402
from instrument.integrations.transformers import BEFORE_CLIP, AvionicsCallback  # noqa: E402
from tests.integrations.hf_models import cls_data, lm_data, tiny_bert, tiny_gpt2  # noqa: E402
from tests.integrations.quiet import assert_quiet  # noqa: E402

pytestmark = pytest.mark.integrations

CLIP = 0.1
"""max_grad_norm small enough that every step clips (these gradients have norms near 1)."""

MODELS = {"gpt2": (tiny_gpt2, lm_data), "bert": (tiny_bert, cls_data)}


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "hf"), per_device_train_batch_size=4,
                report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    return TrainingArguments(**{**base, **kw})


def _train(tmp_path, kind, ga, steps=5, callbacks=(), **kw):
    make_model, make_data = MODELS[kind]
    model = make_model()
    args = _args(tmp_path, gradient_accumulation_steps=ga, max_steps=steps, logging_steps=1,
                 max_grad_norm=CLIP, learning_rate=1e-3, **kw)
    trainer = Trainer(model=model, args=args, train_dataset=make_data(48),
                      callbacks=list(callbacks))
    trainer.train()
    return trainer, model


def _series(run, key):
    df = run.scalars(keys=[key])
    return {int(s): float(v) for s, v in zip(df["step"], df["value"])}


@pytest.mark.parametrize("ga", [1, 2])
@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_loss_grad_norm_lr_equal_trainers_log(tmp_path, kind, ga):
    run_dir = str(tmp_path / "run")
    cb = AvionicsCallback(run=run_dir, strict=True)
    trainer, _ = _train(tmp_path, kind, ga, callbacks=[cb])
    logs = [h for h in trainer.state.log_history if "loss" in h and "grad_norm" in h]
    assert [h["step"] for h in logs] == list(range(1, trainer.state.global_step + 1))
    run = instrument.load(run_dir)
    loss, before, after = (_series(run, k) for k in ("loss", BEFORE_CLIP, "grad_norm/total"))
    lr = _series(run, "lr/0")
    # Trainer's step s (1-based global_step after it) is avionics' step s - 1
    assert sorted(loss) == sorted(before) == [h["step"] - 1 for h in logs]
    for h in logs:
        s = h["step"] - 1
        assert loss[s] == pytest.approx(h["loss"], abs=1e-4)
        assert before[s] == pytest.approx(h["grad_norm"], abs=1e-4)
        assert h["grad_norm"] > CLIP  # clipping was active ...
        assert after[s] == pytest.approx(CLIP, rel=1e-4)  # ... and the step used the clipped one
        assert lr[s] == pytest.approx(h["learning_rate"], rel=1e-6)
    assert run.meta["steps"] == trainer.state.global_step
    assert run.meta["status"] == "finished"


def test_gpt2_loss_sums_token_shares_under_accumulation(tmp_path):
    """Brute force for GA=2: the step's loss is the token sum of both micro-batches over the
    num_items_in_batch Trainer passed, not the mean of the two micro-batch means."""
    run_dir = str(tmp_path / "run")
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model, reference = tiny_gpt2(**no_dropout), tiny_gpt2(**no_dropout)
    fed = []  # the micro-batches Trainer fed, captured independently of avionics
    model.register_forward_pre_hook(
        lambda m, a, kw: fed.append({k: kw[k].clone() for k in ("input_ids", "labels",
                                                                 "num_items_in_batch")}),
        with_kwargs=True)
    args = _args(tmp_path, gradient_accumulation_steps=2, max_steps=1, logging_steps=1,
                 learning_rate=1e-3)
    trainer = Trainer(model=model, args=args, train_dataset=lm_data(8),
                      callbacks=[AvionicsCallback(run=run_dir, strict=True)])
    trainer.train()
    assert len(fed) == 2
    counts = [int((b["labels"][:, 1:] != -100).sum()) for b in fed]
    assert counts[0] != counts[1]  # otherwise summing shares and averaging means agree
    total = 0.0
    with torch.no_grad():
        for b in fed:
            logits = reference(input_ids=b["input_ids"]).logits[:, :-1]
            labels = b["labels"][:, 1:]
            keep = labels != -100
            total += torch.nn.functional.cross_entropy(logits[keep], labels[keep],
                                                       reduction="sum").item()
    # the denominator is the token count Trainer passed (its own counting rule), the same
    # for both micro-batches: the step's loss is one token mean, not a mean of two means
    count = float(fed[0]["num_items_in_batch"])
    assert count == float(fed[1]["num_items_in_batch"])
    recorded = _series(instrument.load(run_dir), "loss")[0]
    assert recorded == pytest.approx(total / count, abs=1e-4)
    assert trainer.state.log_history[0]["loss"] == pytest.approx(total / count, abs=1e-4)


def test_training_unchanged_and_beside_other_callbacks(tmp_path):
    """Parameters after training are bit-identical with and without the callback; another
    callback (Trainer's own printer) keeps working beside it."""
    from transformers import PrinterCallback

    _, plain = _train(tmp_path, "gpt2", 2, steps=3)
    cb = AvionicsCallback(run=str(tmp_path / "run"), strict=True)
    _, watched = _train(tmp_path, "gpt2", 2, steps=3, callbacks=[cb, PrinterCallback()])
    for (name, a), (_, b) in zip(plain.named_parameters(), watched.named_parameters()):
        assert torch.equal(a, b), name
    assert cb.monitor is None  # closed at train end


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_healthy_default_trainer_run_is_quiet(tmp_path, kind):
    """100 steps with Trainer's default settings (AdamW 5e-5, linear decay, clipping at 1.0)
    on learnable synthetic data: no warnings or criticals from the diagnosis."""
    make_model, make_data = MODELS[kind]
    run_dir = str(tmp_path / "run")
    args = _args(tmp_path, max_steps=100, per_device_train_batch_size=8)
    Trainer(model=make_model(), args=args, train_dataset=make_data(400),
            callbacks=[AvionicsCallback(run=run_dir, strict=True)]).train()
    assert_quiet(run_dir)


def test_eval_metrics_at_the_step_they_follow(tmp_path):
    run_dir = str(tmp_path / "run")
    args = _args(tmp_path, max_steps=2, logging_steps=1, eval_strategy="steps", eval_steps=2,
                 per_device_eval_batch_size=8)
    trainer = Trainer(model=tiny_bert(), args=args, train_dataset=cls_data(16),
                      eval_dataset=cls_data(8, seed=5),
                      callbacks=[AvionicsCallback(run=run_dir, strict=True)])
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 1 and evals[0]["step"] == 2
    run = instrument.load(run_dir)
    assert _series(run, "eval/loss") == {1: pytest.approx(evals[0]["eval_loss"], rel=1e-6)}
    assert run.meta["steps"] == 2  # evaluation forwards (no_grad) are not steps


class WeightedLossTrainer(Trainer):
    """The most common Trainer subclass: a class-weighted loss in an overridden compute_loss."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weight = torch.linspace(1.0, 3.0, outputs.logits.shape[-1], device=outputs.logits.device)
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weight)
        return (loss, outputs) if return_outputs else loss


def _focal(outputs, labels, num_items_in_batch=None):
    """A compute_loss_func: focal loss (gamma 2), the model never sees the labels."""
    logp = torch.log_softmax(outputs.logits, -1).gather(1, labels[:, None]).squeeze(1)
    return (-(1 - logp.exp()) ** 2 * logp).mean()


LOSS_COMPUTED_BY_TRAINER = {
    "compute_loss_override": (WeightedLossTrainer, {}, {}),
    "compute_loss_func": (Trainer, {}, {"compute_loss_func": _focal}),
    "label_smoothing": (Trainer, {"label_smoothing_factor": 0.1}, {}),
}


@pytest.mark.parametrize("ga", [1, 2])
@pytest.mark.parametrize("case", sorted(LOSS_COMPUTED_BY_TRAINER))
def test_a_loss_trainer_computes_itself_equals_its_log(tmp_path, case, ga):
    """Whatever computes the loss (an overridden compute_loss, compute_loss_func, label
    smoothing: the model returns none or another one), the recorded loss is Trainer's own
    per-step loss, and the wrapped training_step is gone after train()."""
    trainer_class, arg_kw, trainer_kw = LOSS_COMPUTED_BY_TRAINER[case]
    run_dir = str(tmp_path / "run")
    args = _args(tmp_path, max_steps=3, logging_steps=1, gradient_accumulation_steps=ga,
                 **arg_kw)
    trainer = trainer_class(model=tiny_bert(), args=args, train_dataset=cls_data(32),
                            callbacks=[AvionicsCallback(run=run_dir, strict=True)],
                            **trainer_kw)
    trainer.train()
    assert "training_step" not in vars(trainer)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    loss = _series(instrument.load(run_dir), "loss")
    assert loss == {h["step"] - 1: pytest.approx(h["loss"], abs=1e-4) for h in logs}


def test_a_callback_called_outside_a_trainer_says_it_records_no_loss(tmp_path):
    """on_train_begin from something that is not a Trainer: no loss, one info event."""
    from transformers import TrainerControl, TrainerState

    model = tiny_bert()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cb = AvionicsCallback(run=str(tmp_path / "run"), strict=True)
    args = _args(tmp_path)
    cb.on_train_begin(args, TrainerState(), TrainerControl(), model=model, optimizer=opt)
    cb.on_step_end(args, TrainerState(), TrainerControl())
    run_dir = cb.monitor.run_dir
    cb.on_train_end(args, TrainerState(), TrainerControl())
    run = instrument.load(run_dir)
    assert "loss" not in run.keys()
    notes = run.events(codes=["integration"])
    assert len(notes) == 1 and "No loss recorded" in notes["message"][0]
    assert notes["severity"][0] == "info"


def test_gradient_checkpointing_records_what_the_plain_run_records(tmp_path):
    """TrainingArguments(activation_checkpointing=True) recomputes each GPT-2 block inside
    backward: the activation statistics are still those of the forward pass, once."""
    runs = {}
    for ckpt in (False, True):
        run_dir = str(tmp_path / f"run{ckpt}")
        _train(tmp_path, "gpt2", 1, steps=2, activation_checkpointing=ckpt,
               callbacks=[AvionicsCallback(run=run_dir, strict=True,
                                           schedules={"activations": 1})])
        run = instrument.load(run_dir)
        runs[ckpt] = {k: run.layers(keys=[k]).sort_values(["step", "layer"])
                      for k in run.keys("layer") if k.startswith("act/")}
    assert runs[False] and set(runs[False]) == set(runs[True])
    for key, plain in runs[False].items():
        ckpt = runs[True][key]
        assert plain["layer"].tolist() == ckpt["layer"].tolist(), key
        assert plain["value"].to_numpy() == pytest.approx(ckpt["value"].to_numpy(), rel=1e-4,
                                                          abs=1e-6, nan_ok=True), key
