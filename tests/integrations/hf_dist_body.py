"""The body each rank runs in test_transformers_distributed (importable by the harness)."""

from __future__ import annotations


def train_ranks(rank, world, run_dir, out_dir):
    """Trainer + AvionicsCallback on one rank of a gloo group the harness set up; returns
    Trainer's log history (rank 0 has the logs) and the global step."""
    from transformers import Trainer, TrainingArguments

    from instrument.integrations.transformers import AvionicsCallback
    from tests.integrations.hf_models import lm_data, tiny_gpt2

    args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=2,
                             gradient_accumulation_steps=2, max_steps=3, logging_steps=1,
                             max_grad_norm=0.1, learning_rate=1e-3, report_to="none",
                             save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=lm_data(32),
                      callbacks=[AvionicsCallback(run=run_dir, strict=True)])
    trainer.train()
    return {"log_history": trainer.state.log_history, "global_step": trainer.state.global_step,
            "world": trainer.args.world_size}
