"""The models the overhead benchmarks train, each with a batch maker and its loss.

Shaped like what people train, written here because torchvision is not usable in this
environment: an MLP and a small CNN on 3x32x32 inputs, a nanoGPT-shaped GPT (pre-norm blocks,
tied embeddings, the loss computed inside ``forward``) and a ResNet-18-shaped CNN with
BatchNorm (four stages of two basic blocks, the CIFAR stem).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 256), nn.ReLU(),
                         nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10))


class CausalSelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, d))


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's shape: token + position embeddings, pre-norm blocks, a final LayerNorm and a
    head tied to the token embedding; ``forward(idx, targets)`` returns the loss."""

    def __init__(self, blocks=4, d=128, heads=4, vocab=256, ctx=64):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(blocks))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():  # nanoGPT's scaled init of the projections
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * blocks))

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + (x if self.down is None else self.down(x)))


def resnet18(width=64, classes=10):
    """ResNet-18's layout (2-2-2-2 basic blocks, widths w..8w) with the CIFAR stem."""
    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for b in range(2):
            layers.append(BasicBlock(cin, cout, 2 if stage and not b else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


class Spec:
    """A model with its batches: ``loss(model, batch)`` is what a training step backpropagates."""

    def __init__(self, build, batch, make_batch, loss):
        self.build, self.batch, self.make_batch, self.loss = build, batch, make_batch, loss


def _images(batch):
    def make(g):
        return torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,),
                                                                         generator=g)
    return make


def _tokens(batch, vocab=256, ctx=64):
    def make(g):
        idx = torch.randint(0, vocab, (batch, ctx + 1), generator=g)
        return idx[:, :-1].contiguous(), idx[:, 1:].contiguous()
    return make


def _classify(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def _inside(model, batch):
    return model(*batch)


def gpt_many_layers(blocks=48, d=32, heads=2):
    """A deep, narrow GPT: 580 parameter tensors (one tied pair counted once), 340 leaf
    modules."""
    return GPT(blocks=blocks, d=d, heads=heads)


MODELS = {
    "mlp": Spec(mlp, 128, _images(128), _classify),
    "cnn": Spec(small_cnn, 128, _images(128), _classify),
    "gpt": Spec(GPT, 16, _tokens(16), _inside),
    "resnet18": Spec(resnet18, 16, _images(16), _classify),
}
MANY_LAYERS = {"gpt48": Spec(gpt_many_layers, 8, _tokens(8), _inside)}
"""Run by ``benchmarks/many_layers.py``, not by the matrix."""
