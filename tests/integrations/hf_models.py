"""Tiny Hugging Face models from configs (random init, nothing downloaded) and synthetic data."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
)

VOCAB = 64
SEQ = 16


def tiny_gpt2(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(GPT2Config(**{**cfg, **overrides}))


def tiny_bert(seed: int = 0, labels: int = 3, **overrides) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=SEQ, num_labels=labels)
    return BertForSequenceClassification(BertConfig(**{**cfg, **overrides}))


def lm_data(n: int, seed: int = 1, masked: float = 0.3) -> list:
    """Causal-LM examples whose labels ignore (-100) a random share of the tokens, so that the
    micro-batches of a step hold different numbers of counted tokens (num_items_in_batch
    matters). The text repeats a short pattern, so a model can learn it."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        start = int(torch.randint(0, VOCAB, (1,), generator=g))
        ids = (start + torch.arange(SEQ) * 3) % VOCAB
        labels = ids.clone()
        labels[torch.rand(SEQ, generator=g) < masked] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


def cls_data(n: int, seed: int = 2, labels: int = 3) -> list:
    """Sequence classification: the label is the first token's class, so it can be learned."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (SEQ,), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones(SEQ, dtype=torch.long),
                    "labels": torch.tensor(int(ids[0]) % labels)})
    return out
