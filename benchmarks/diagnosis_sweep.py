"""The diagnosis rules on modern architectures: a healthy sweep and a seeded-bug suite.

Healthy configurations (transformer LMs with GPT-2 initialization and tied embeddings, pre-LN
and post-LN (BERT-style) encoders, ResNets with BatchNorm, LSTMs, fine-tuning with a frozen
backbone, bf16 autocast, AdamW with warm-up + cosine + clipping, label smoothing, OneCycle,
transformers' GPT-2 and BERT from tiny configs) must give no warning (info allowed); each
seeded bug (one of the README's rule list, on these families) must give its rule's code.

    python benchmarks/diagnosis_sweep.py            # full runs, prints the table for rules.md
    python benchmarks/diagnosis_sweep.py --ci       # the shortened runs the tests use
    python benchmarks/diagnosis_sweep.py --only gpt_adamw_warmup_cosine --show

Everything is small and CPU-only (seconds per run). Data are synthetic or bundled (sklearn's
8x8 digits): token sequences from a fixed random Markov chain (language modelling; the
classification label is a function of the tokens), digit images for the ResNets.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instrument  # noqa: E402
from benchmarks.models import BasicBlock  # noqa: E402

VOCAB, SEQ, CLASSES = 32, 16, 4


# ---- data ---------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _chain() -> torch.Tensor:
    """A fixed Markov chain over VOCAB tokens, each with a few likely successors."""
    g = torch.Generator().manual_seed(123)
    logits = torch.randn(VOCAB, VOCAB, generator=g) * 3.0
    return logits.softmax(-1)


def token_batches(batch: int, seed: int):
    """Sequences of SEQ + 1 tokens from the chain, forever."""
    g = torch.Generator().manual_seed(seed)
    p = _chain()
    while True:
        tok = torch.randint(0, VOCAB, (batch,), generator=g)
        seq = [tok]
        for _ in range(SEQ):
            tok = torch.multinomial(p[tok], 1, generator=g)[:, 0]
            seq.append(tok)
        yield torch.stack(seq, 1)


@lru_cache(maxsize=1)
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None]
    return x, torch.tensor(d.target, dtype=torch.long)


# ---- models -------------------------------------------------------------------------------------
class Block(nn.Module):
    """A pre-LN transformer block (nanoGPT's): attention and MLP on the residual stream."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.drop_1 = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.c_proj = nn.Linear(4 * d, d)
        self.drop_2 = nn.Dropout(dropout)

    def forward(self, x, mask):
        h = self.ln_1(x)
        x = x + self.drop_1(self.attn(h, h, h, attn_mask=mask, need_weights=False)[0])
        return x + self.drop_2(self.c_proj(self.act(self.c_fc(self.ln_2(x)))))


class TinyGPT(nn.Module):
    """nanoGPT in miniature: GPT-2 initialization (normal 0.02, residual projections
    0.02/sqrt(2 layers)), learned positions, pre-LN blocks, tied input/output embeddings."""

    def __init__(self, d=32, layers=2, heads=2, dropout=0.1, tied=True):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, d)
        self.wpe = nn.Embedding(SEQ, d)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, VOCAB, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("c_proj.weight",
                                                                     "out_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(t, device=idx.device)))
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=idx.device), 1)
        for block in self.h:
            x = block(x, mask)
        return self.lm_head(self.ln_f(x))


class Encoder(nn.Module):
    """A BERT-style encoder classifier (post-LN unless ``pre_ln``): token and position
    embeddings, LayerNorm, dropout, torch's TransformerEncoder, a head on the first token."""

    def __init__(self, d=32, layers=2, heads=2, dropout=0.1, pre_ln=False, act="gelu"):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Embedding(SEQ, d)
        self.ln = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        act = nn.Tanh() if act == "tanh" else act
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout, activation=act,
                                           batch_first=True, norm_first=pre_ln)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pool = nn.Linear(d, d)
        self.pool_act = nn.Tanh()
        self.head = nn.Linear(d, CLASSES)
        for emb in (self.tok, self.pos):
            nn.init.normal_(emb.weight, 0.0, 0.02)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        x = self.enc(self.drop(self.ln(x)))
        return self.head(self.pool_act(self.pool(x[:, 0])))


class ResNet(nn.Module):
    """A small ResNet for 1x8x8 digits: stem, three stages of basic blocks, pooled head."""

    def __init__(self, width=8, blocks=1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        stages, cin = [], width
        for i, w in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                stages.append(BasicBlock(cin, w, 2 if (i and not b) else 1))
                cin = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(cin, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.stages(self.stem(x)))))


class LSTMClassifier(nn.Module):
    def __init__(self, d=32, hidden=64):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.lstm = nn.LSTM(d, hidden, batch_first=True)
        self.out = nn.Linear(hidden, CLASSES)

    def forward(self, idx):
        h, _ = self.lstm(self.emb(idx))
        return self.out(h[:, -1])


class MLP(nn.Module):
    """A digits MLP (for the bugs that need plain ReLU/tanh/sigmoid stacks)."""

    def __init__(self, act="relu", depth=2, width=64):
        super().__init__()
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
        layers, cin = [nn.Flatten()], 64
        for _ in range(depth):
            layers += [nn.Linear(cin, width), acts[act]()]
            cin = width
        layers.append(nn.Linear(cin, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def hf_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=2,
                     resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def hf_bert():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=SEQ,
                     num_labels=CLASSES)
    return BertForSequenceClassification(cfg)


# ---- cases --------------------------------------------------------------------------------------
LM_FAMILIES = ("gpt", "hf_gpt2")
SEQ_FAMILIES = ("encoder", "pre_ln_encoder", "hf_bert", "lstm")
IMAGE_FAMILIES = ("resnet", "mlp", "tanh_mlp", "deep_sigmoid", "finetune")


@dataclass(frozen=True)
class Case:
    """One run: a family, an optimizer and schedule, options, and at most a few bugs.

    ``expect`` is the code a seeded bug must produce (None: healthy, no warning allowed).
    ``steps`` is the full run, ``ci_steps`` the shortened one the tests train.
    """

    name: str
    family: str
    optimizer: str = "adamw"
    lr: float = 3e-3
    steps: int = 300
    ci_steps: int = 60
    batch: int = 32
    schedule: str = "none"
    warmup: int = 20
    clip: float | None = None
    label_smoothing: float = 0.0
    bf16: bool = False
    weight_decay: float = 0.01
    bugs: frozenset = field(default_factory=frozenset)
    expect: str | None = None
    slow: bool = False
    seed: int = 0


def _c(name, family, **kw) -> Case:
    if "bugs" in kw:
        kw["bugs"] = frozenset(kw["bugs"])
    return Case(name, family, **kw)


HEALTHY = [
    # transformer LMs (own nanoGPT-like, GPT-2 init, tied, pre-LN) and transformers' GPT-2
    _c("gpt_adamw_warmup_cosine_clip", "gpt", schedule="warmup_cosine", clip=1.0),
    _c("gpt_adamw_constant", "gpt", lr=1e-3),
    _c("gpt_adam_warmup", "gpt", optimizer="adam", lr=1e-3, schedule="warmup"),
    _c("gpt_bf16_autocast", "gpt", bf16=True, schedule="warmup_cosine"),
    _c("gpt_onecycle", "gpt", schedule="onecycle", lr=3e-3),
    _c("gpt_label_smoothing", "gpt", label_smoothing=0.1, schedule="warmup_cosine"),
    _c("gpt_sgd_momentum", "gpt", optimizer="sgd", lr=0.3, clip=1.0, weight_decay=0.0),
    _c("gpt_untied_accumulate", "gpt", schedule="warmup_cosine", batch=16),
    _c("hf_gpt2_adamw_warmup_cosine", "hf_gpt2", schedule="warmup_cosine", clip=1.0),
    _c("hf_gpt2_bf16", "hf_gpt2", bf16=True, lr=1e-3),
    _c("hf_gpt2_linear_decay", "hf_gpt2", schedule="warmup_linear", lr=2e-3),
    # encoders: BERT-style post-LN, pre-LN, transformers' BERT
    _c("encoder_adamw_warmup_cosine", "encoder", schedule="warmup_cosine", clip=1.0),
    _c("encoder_relu_adam", "encoder", optimizer="adam", lr=1e-3),
    _c("encoder_label_smoothing", "encoder", label_smoothing=0.1, schedule="warmup_linear"),
    _c("pre_ln_encoder_onecycle", "pre_ln_encoder", schedule="onecycle"),
    _c("pre_ln_encoder_bf16", "pre_ln_encoder", bf16=True, schedule="warmup_cosine"),
    _c("hf_bert_adamw_warmup_linear", "hf_bert", schedule="warmup_linear", lr=2e-3),
    _c("hf_bert_clip_cosine", "hf_bert", schedule="warmup_cosine", clip=1.0, lr=2e-3),
    # ResNets with BatchNorm
    _c("resnet_sgd_cosine", "resnet", optimizer="sgd", lr=0.05, schedule="cosine"),
    _c("resnet_sgd_onecycle", "resnet", optimizer="sgd", lr=0.1, schedule="onecycle"),
    _c("resnet_adamw_warmup_cosine", "resnet", schedule="warmup_cosine", lr=2e-3),
    _c("resnet_label_smoothing", "resnet", optimizer="sgd", lr=0.05, label_smoothing=0.1),
    _c("resnet_bf16", "resnet", bf16=True, optimizer="sgd", lr=0.05),
    _c("resnet_sgd_step_decay", "resnet", optimizer="sgd", lr=0.05, schedule="step_decay"),
    # LSTMs
    _c("lstm_adam", "lstm", optimizer="adam", lr=3e-3),
    _c("lstm_adamw_clip_cosine", "lstm", schedule="warmup_cosine", clip=1.0),
    _c("lstm_sgd_clip", "lstm", optimizer="sgd", lr=0.1, clip=5.0),
    # fine-tuning a frozen backbone (only the head in the optimizer)
    _c("finetune_frozen_backbone_adamw", "finetune", lr=3e-3),
    _c("finetune_frozen_backbone_sgd", "finetune", optimizer="sgd", lr=0.05),
    # plain stacks, for contrast
    _c("mlp_sgd_momentum", "mlp", optimizer="sgd", lr=0.05),
    _c("tanh_mlp_adamw_cosine", "tanh_mlp", schedule="cosine", lr=2e-3),
    _c("gpt_long_warmup_then_cosine", "gpt", schedule="warmup_cosine", warmup=150, lr=1e-3,
       ci_steps=300, slow=True),
]

BUGS = [
    # (the README's rule list, spread over the families)
    _c("gpt_no_zero_grad", "gpt", bugs={"no_zero_grad"}, expect="missing_zero_grad",
       ci_steps=10),
    _c("resnet_no_zero_grad", "resnet", optimizer="sgd", lr=0.05, bugs={"no_zero_grad"},
       expect="missing_zero_grad", ci_steps=10),
    _c("gpt_adamw_lr_100x", "gpt", lr=0.3, schedule="warmup", warmup=20, clip=1.0,
       expect="lr_too_high", ci_steps=150),
    _c("encoder_adamw_lr_100x", "encoder", lr=0.3, expect="lr_too_high", ci_steps=150),
    _c("resnet_sgd_lr_too_high", "resnet", optimizer="sgd", lr=20.0, expect="lr_too_high",
       ci_steps=30),
    _c("lstm_sgd_lr_too_high", "lstm", optimizer="sgd", lr=200.0, expect="lr_too_high",
       ci_steps=30),
    _c("gpt_lr_too_low", "gpt", lr=1e-7, expect="lr_too_low", ci_steps=115),
    _c("resnet_lr_too_low", "resnet", optimizer="sgd", lr=1e-6, expect="lr_too_low",
       ci_steps=115),
    _c("mlp_dead_relu_bias", "mlp", optimizer="sgd", lr=0.05, bugs={"dead_bias"},
       expect="dead_units", ci_steps=50),
    _c("resnet_dead_head", "resnet", optimizer="sgd", lr=0.05, bugs={"dead_bias"},
       expect="dead_units", ci_steps=50),
    _c("deep_sigmoid_vanishing", "deep_sigmoid", optimizer="sgd", lr=0.05,
       expect="vanishing_gradients", ci_steps=30),
    _c("tanh_mlp_saturated", "tanh_mlp", optimizer="sgd", lr=0.01, bugs={"huge_init"},
       expect="saturated_units", ci_steps=50),
    _c("encoder_tanh_ffn_huge_init", "encoder", bugs={"huge_ffn"}, expect="saturated_units",
       ci_steps=50),
    _c("gpt_nan_in_forward", "gpt", bugs={"nan_input"}, expect="nonfinite", ci_steps=5),
    _c("resnet_raw_pixels", "resnet", optimizer="sgd", lr=1e-3, bugs={"raw_pixels"},
       expect="input_scale", ci_steps=10),
    _c("mlp_raw_pixels", "mlp", optimizer="sgd", lr=1e-4, bugs={"raw_pixels"},
       expect="input_scale", ci_steps=10),
    _c("gpt_unused_block", "gpt", bugs={"unused_layer"}, expect="frozen_parameters",
       ci_steps=60),
    _c("resnet_head_not_in_optimizer", "resnet", optimizer="sgd", lr=0.05,
       bugs={"not_in_optimizer"}, expect="frozen_parameters", ci_steps=60),
    _c("finetune_frozen_in_optimizer", "finetune", bugs={"frozen_in_optimizer"},
       expect="frozen_in_optimizer", ci_steps=5),
    _c("gpt_step_lr_gamma_2", "gpt", lr=1e-5, schedule="step_up", expect="lr_schedule_increasing",
       ci_steps=80),
    _c("resnet_cosine_too_short", "resnet", optimizer="sgd", lr=0.05, schedule="short_cosine",
       expect="lr_schedule_increasing", ci_steps=60),
    _c("gpt_warmup_longer_than_run", "gpt", lr=1e-3, schedule="warmup", warmup=100000,
       expect="lr_schedule_increasing", ci_steps=30),
    _c("gpt_eval_mode", "gpt", bugs={"eval_mode"}, expect="eval_mode_training", ci_steps=8),
    _c("resnet_eval_mode", "resnet", optimizer="sgd", lr=0.05, bugs={"eval_mode"},
       expect="eval_mode_training", ci_steps=8),
    _c("encoder_repeated_batch", "encoder", bugs={"repeated_batch"}, expect="repeated_batch",
       ci_steps=15),
    _c("resnet_repeated_batch", "resnet", optimizer="sgd", lr=0.05, bugs={"repeated_batch"},
       expect="repeated_batch", ci_steps=15),
    _c("resnet_softmax_into_ce", "resnet", optimizer="sgd", lr=0.05, bugs={"softmax_into_ce"},
       expect="probabilities_into_loss", ci_steps=6),
    _c("lstm_softmax_into_ce", "lstm", bugs={"softmax_into_ce"},
       expect="probabilities_into_loss", ci_steps=6),
    _c("resnet_unshuffled", "resnet", optimizer="sgd", lr=0.05, bugs={"unshuffled"},
       expect="single_label_batch", ci_steps=25),
    _c("encoder_shuffled_labels", "encoder", lr=1e-3, bugs={"shuffled_labels"},
       expect="loss_at_chance", ci_steps=160),
    _c("resnet_big_last_layer", "resnet", optimizer="sgd", lr=0.01, bugs={"big_last_layer"},
       expect="initial_loss", ci_steps=3),
]
"""Seeded bugs and the code each must produce."""

CASES = {c.name: c for c in HEALTHY + BUGS}


# ---- training -----------------------------------------------------------------------------------
def make_model(case: Case) -> nn.Module:
    torch.manual_seed(case.seed)
    fam = case.family
    if fam == "gpt":
        return TinyGPT(tied="untied" not in case.name)
    if fam == "hf_gpt2":
        return hf_gpt2()
    if fam in ("encoder", "pre_ln_encoder"):
        return Encoder(pre_ln=fam == "pre_ln_encoder",
                       act="tanh" if "huge_ffn" in case.bugs else
                       "relu" if "relu" in case.name else "gelu")
    if fam == "hf_bert":
        return hf_bert()
    if fam == "lstm":
        return LSTMClassifier()
    if fam in ("resnet", "finetune"):
        return ResNet()
    if fam == "mlp":
        return MLP()
    if fam == "tanh_mlp":
        return MLP("tanh")
    if fam == "deep_sigmoid":
        return MLP("sigmoid", depth=8, width=32)
    raise ValueError(fam)


def seed_model_bugs(case: Case, model: nn.Module) -> nn.Module:
    """Bugs that live in the model's weights or structure."""
    with torch.no_grad():
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if "dead_bias" in case.bugs:
            target = model.fc if isinstance(model, ResNet) else linears[0]
            if isinstance(model, ResNet):  # a ReLU'd hidden layer before the head
                model.fc = nn.Sequential(nn.Linear(target.in_features, 64), nn.ReLU(),
                                         nn.Linear(64, 10))
                target = model.fc[0]
            target.bias.fill_(-4.0 * (1 + float(target.weight.abs().max())))
        if "huge_init" in case.bugs:
            for m in linears[1:-1] or linears:
                m.weight.mul_(60.0)
        if "huge_ffn" in case.bugs:
            for layer in model.enc.layers:
                layer.linear1.weight.mul_(50.0)
        if "big_last_layer" in case.bugs:
            linears[-1].weight.mul_(100.0)
    if "unused_layer" in case.bugs:
        model.aux_head = nn.Linear(32, VOCAB)  # defined, never called in forward()
    return model


def param_groups(case: Case, model: nn.Module):
    if case.family == "finetune":  # frozen backbone, new head
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("fc."))
        if "frozen_in_optimizer" in case.bugs:
            return list(model.parameters())
        return [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": case.weight_decay},
            {"params": other, "weight_decay": 0.0}]


def make_optimizer(case: Case, groups):
    if case.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=case.lr, momentum=0.9)
    if case.optimizer == "adam":
        return torch.optim.Adam(groups, lr=case.lr)
    return torch.optim.AdamW(groups, lr=case.lr, betas=(0.9, 0.95))


def make_scheduler(case: Case, opt, steps: int):
    s, w = case.schedule, case.warmup
    sched = torch.optim.lr_scheduler
    if s == "none":
        return None
    if s == "onecycle":
        return sched.OneCycleLR(opt, max_lr=case.lr, total_steps=steps)
    if s == "step_decay":
        return sched.StepLR(opt, step_size=max(1, steps // 3), gamma=0.1)
    if s == "step_up":  # the bug: gamma > 1
        return sched.StepLR(opt, step_size=10, gamma=2.0)
    if s == "short_cosine":  # T_max a third of the run: climbs back up after it
        return sched.CosineAnnealingLR(opt, T_max=max(1, steps // 3))

    def factor(i):
        if s == "warmup":
            return min(1.0, (i + 1) / w)
        if s == "cosine":
            return 0.5 * (1 + math.cos(math.pi * i / steps))
        warm = min(1.0, (i + 1) / w)
        frac = max(0.0, (i - w) / max(1, steps - w))
        if s == "warmup_cosine":
            return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
        if s == "warmup_linear":
            return warm * max(0.0, 1 - frac)
        raise ValueError(s)

    return sched.LambdaLR(opt, factor)


class Data:
    """The batches of a case, with the data bugs applied."""

    def __init__(self, case: Case):
        self.case = case
        fam = case.family
        self.kind = ("lm" if fam in LM_FAMILIES else "seq" if fam in SEQ_FAMILIES else "image")
        g = torch.Generator().manual_seed(case.seed + 1)
        self.g = g
        if self.kind == "image":
            x, y = digits()
            x = x * 16.0 if "raw_pixels" in case.bugs else (x - x.mean()) / x.std()
            if "shuffled_labels" in case.bugs:
                y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(7))]
            self.x, self.y = x, y
            self.order = torch.argsort(y, stable=True)
            self.pos = 0
        else:
            self.tokens = token_batches(case.batch, case.seed + 1)
        self.fixed = None

    def _labels(self, seq):
        # a label the model can read off: the first token for the encoders (their head reads
        # position 0), the last for the LSTM (its head reads the last state)
        y = (seq[:, -1] if self.case.family == "lstm" else seq[:, 0]) % CLASSES
        if "shuffled_labels" in self.case.bugs:
            y = torch.randint(0, CLASSES, y.shape, generator=self.g)
        return y

    def next(self):
        if self.fixed is not None:
            return self.fixed
        case = self.case
        if self.kind == "image":
            if "unshuffled" in case.bugs:
                idx = self.order[self.pos: self.pos + case.batch]
                self.pos = (self.pos + case.batch) % (len(self.order) - case.batch)
            else:
                idx = torch.randint(0, len(self.y), (case.batch,), generator=self.g)
            out = (self.x[idx], self.y[idx])
        else:
            seq = next(self.tokens)
            out = ((seq[:, :-1], seq[:, 1:]) if self.kind == "lm"
                   else (seq[:, 1:], self._labels(seq[:, 1:])))
        if "repeated_batch" in case.bugs:
            self.fixed = out
        return out


def _forward(case: Case, model, x, y, crit):
    """(loss, logits-for-the-criterion or None): HF GPT-2 computes its loss inside forward."""
    if case.family == "hf_gpt2":
        return model(input_ids=x, labels=x).loss
    out = model(x) if case.family != "hf_bert" else model(input_ids=x).logits
    if "softmax_into_ce" in case.bugs:
        out = out.softmax(-1)
    if out.dim() == 3:
        out, y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
    return crit(out, y)


def train(case: Case, run_dir: str, steps: int | None = None, strict: bool = True) -> str:
    """Train ``case`` for ``steps`` (default: ``case.steps``) with avionics attached; returns
    the run directory."""
    steps = steps or case.steps
    model = seed_model_bugs(case, make_model(case))
    opt = make_optimizer(case, param_groups(case, model))
    if "not_in_optimizer" in case.bugs:  # the head replaced after the optimizer was made
        model.fc = nn.Linear(model.fc.in_features, 10)
    if "nan_input" in case.bugs:
        model.wte.weight.data[3, 0] = float("nan")
    sched = make_scheduler(case, opt, steps)
    crit = nn.CrossEntropyLoss(label_smoothing=case.label_smoothing)
    data = Data(case)
    mon = instrument.watch(model, opt, run=run_dir, strict=strict, overwrite=True,
                           loss_fn=None if case.family == "hf_gpt2" else crit)
    if "eval_mode" in case.bugs:
        model.eval()
    micro = 2 if "accumulate" in case.name else 1
    with mon:
        for _ in range(steps):
            if "no_zero_grad" not in case.bugs:
                opt.zero_grad(set_to_none=True)
            for _ in range(micro):
                x, y = data.next()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case.bf16):
                    loss = _forward(case, model, x, y, crit)
                (loss / micro).backward()
                mon.log(loss=loss.detach().float())
            if case.clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), case.clip)
            opt.step()
            if sched is not None:
                sched.step()
    return mon.run_dir


# ---- judging ------------------------------------------------------------------------------------
def judge(case: Case, run_dir: str) -> dict:
    """What the run's events say about the case: codes by severity, and the verdict."""
    ev = instrument.load(run_dir).events()
    ev = ev[ev.code != "instrument_error"] if len(ev) else ev
    warnings = sorted(set(ev[ev.severity != "info"].code)) if len(ev) else []
    codes = sorted(set(ev.code)) if len(ev) else []
    if case.expect is None:
        ok = not warnings
    else:
        ok = case.expect in codes
    return {"name": case.name, "family": case.family, "expect": case.expect, "ok": ok,
            "warnings": warnings, "codes": codes, "events": ev}


def run_case(case: Case, ci: bool, root: str) -> dict:
    t = time.time()
    run_dir = train(case, os.path.join(root, case.name), case.ci_steps if ci else case.steps)
    out = judge(case, run_dir)
    out["seconds"] = time.time() - t
    return out


def table(results: list) -> str:
    """The markdown table for docs/rules.md: per family, healthy runs with warnings and bugs
    found with the right code."""
    fams = sorted({r["family"] for r in results})
    lines = ["| family | healthy runs | with a warning | seeded bugs | found (right code) |",
             "|---|---|---|---|---|"]
    tot = [0, 0, 0, 0]
    for fam in fams:
        h = [r for r in results if r["family"] == fam and r["expect"] is None]
        b = [r for r in results if r["family"] == fam and r["expect"] is not None]
        row = [len(h), sum(not r["ok"] for r in h), len(b), sum(r["ok"] for r in b)]
        tot = [a + v for a, v in zip(tot, row)]
        lines.append(f"| {fam} | " + " | ".join(map(str, row)) + " |")
    recall = 100 * tot[3] / max(1, tot[2])
    lines.append(f"| **all** | {tot[0]} | {tot[1]} | {tot[2]} | {tot[3]} ({recall:.0f} %) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ci", action="store_true", help="the shortened runs of the tests")
    ap.add_argument("--only", nargs="*", help="case names")
    ap.add_argument("--show", action="store_true", help="print each run's events")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = [CASES[n] for n in args.only] if args.only else list(CASES.values())
    results = []
    with tempfile.TemporaryDirectory() as root:
        for case in cases:
            r = run_case(case, args.ci, root)
            results.append(r)
            verdict = "ok  " if r["ok"] else "FAIL"
            print(f"{verdict} {case.name:38s} {r['seconds']:5.1f}s expect={case.expect} "
                  f"codes={r['codes']}", flush=True)
            if args.show and len(r["events"]):
                print(r["events"][["step", "code", "severity", "layer",
                                   "message"]].to_string(max_colwidth=160))
    print()
    print(table(results))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["BUGS", "CASES", "HEALTHY", "Case", "judge", "replace", "run_case", "table", "train"]
