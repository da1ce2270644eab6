"""A nanoGPT-shaped language model for the tests, at toy size.

The shape is karpathy/nanoGPT's ``model.py``: token and position embeddings, pre-LayerNorm
blocks of causal self-attention and a GELU MLP, a final LayerNorm, a head whose weight is tied
to the token embedding (``lm_head.weight is transformer.wte.weight``), the loss computed inside
``forward`` with ``F.cross_entropy`` on the (B*T, V) flattened logits (``ignore_index=-1``), and
``configure_optimizers`` with AdamW decay (2-D weights) and no-decay (biases, LayerNorm)
groups. ``forward(idx)`` without targets returns the logits of every position (nanoGPT returns
only the last one's; the tests need all of them for brute-force references).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Config:
    def __init__(self, vocab=13, block=6, layers=2, heads=2, embd=8, dropout=0.0, bias=True):
        self.vocab, self.block, self.layers, self.heads = vocab, block, layers, heads
        self.embd, self.dropout, self.bias = embd, dropout, bias


class SelfAttention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c_attn = nn.Linear(c.embd, 3 * c.embd, bias=c.bias)
        self.c_proj = nn.Linear(c.embd, c.embd, bias=c.bias)
        self.attn_dropout = nn.Dropout(c.dropout)
        self.resid_dropout = nn.Dropout(c.dropout)
        self.heads, self.embd = c.heads, c.embd
        self.register_buffer("mask", torch.tril(torch.ones(c.block, c.block))
                             .view(1, 1, c.block, c.block))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.embd, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c_fc = nn.Linear(c.embd, 4 * c.embd, bias=c.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * c.embd, c.embd, bias=c.bias)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.embd, bias=c.bias)
        self.attn = SelfAttention(c)
        self.ln_2 = nn.LayerNorm(c.embd, bias=c.bias)
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab, c.embd),
            wpe=nn.Embedding(c.block, c.embd),
            drop=nn.Dropout(c.dropout),
            h=nn.ModuleList([Block(c) for _ in range(c.layers)]),
            ln_f=nn.LayerNorm(c.embd, bias=c.bias),
        ))
        self.lm_head = nn.Linear(c.embd, c.vocab, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                               ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        params = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]
        nodecay = [p for p in params.values() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": nodecay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)


def get_lr(it, warmup, decay_iters, max_lr, min_lr):
    """nanoGPT's schedule: linear warm-up, then cosine decay down to ``min_lr``."""
    if it < warmup:
        return max_lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


def token_batches(n, B, T, vocab, seed=0, ignore_last=False):
    """``n`` (x, y) batches of a learnable sequence task: y is x shifted by one (y[t] =
    x[t + 1]) on sequences that count up modulo ``vocab`` from a random start."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        start = torch.randint(0, vocab, (B, 1), generator=g)
        seq = (start + torch.arange(T + 1)) % vocab
        x, y = seq[:, :-1].clone(), seq[:, 1:].clone()
        if ignore_last:
            y[:, -1] = -1
        out.append((x, y))
    return out
