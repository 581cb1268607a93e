"""A cheaper CPU training step with the same maths.

Under bf16 autocast every ``nn.Linear`` casts its fp32 weight to bf16 on every call, and autocast only keeps the
casts of weights that *require grad* for the rest of a forward. A frozen weight (stage 1: 26 of SmolLM2's 30
layers and the tied 49,152 × 576 ``lm_head``) is therefore converted again in every forward, ~120 M numbers per
step, although it never changes. :func:`cache_frozen_bf16` gives each frozen linear layer of the backbone one bf16
copy, made the first time autocast needs it and made again only when the weight itself changes (its storage or its
version counter: ``load_state_dict``, an optimiser step, ``copy_``). The product is the one autocast computes (the
same round-to-nearest cast, once instead of every step); outside bf16 autocast, or once a weight requires grad, the
layer runs its usual path.

Measured in ``benchmarks/training.py`` (docs/training.md, "Speed").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["cache_frozen_bf16", "cached_layers"]


def _bf16_autocast(device_type: str) -> bool:
    return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16


def _key(t: torch.Tensor | None):
    return None if t is None else (t.data_ptr(), t._version, t.dtype, tuple(t.shape))


def _frozen_bf16_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    w, b = self.weight, self.bias
    if (w.requires_grad or w.dtype != torch.float32 or not _bf16_autocast(x.device.type)
            or (b is not None and b.requires_grad)):
        return F.linear(x, w, b)
    key = (_key(w), _key(b))
    if self._enel_bf16_key != key:
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            self._enel_bf16 = (w.detach().to(torch.bfloat16), None if b is None else b.detach().to(torch.bfloat16))
        self._enel_bf16_key = key
    cw, cb = self._enel_bf16
    return F.linear(x, cw, cb)  # autocast casts x as it would have; cw, cb are bf16 already


def _backbone_linears(model: nn.Module):
    enel = getattr(model, "model", model)
    roots = [getattr(enel, "language_model", None), getattr(model, "lm_head", None)]
    seen = set()
    for root in roots:
        if root is None:
            continue
        for module in root.modules():
            if type(module) is nn.Linear and id(module) not in seen:
                seen.add(id(module))
                yield module


def cache_frozen_bf16(model: nn.Module, enable: bool = True) -> int:
    """Let the backbone's frozen linear layers keep one bf16 copy of their weights under bf16 autocast.

    Args:
        model: an ``EnelForCausalLM`` (or its ``EnelModel``).
        enable: False takes the copies and the patched ``forward`` away again.

    Returns:
        How many linear layers carry the patch (frozen or not: ``requires_grad`` is read at every call).
    """
    count = 0
    for module in _backbone_linears(model):
        if enable:
            module.forward = _frozen_bf16_forward.__get__(module, nn.Linear)
            module._enel_bf16_key, module._enel_bf16 = None, None
            count += 1
        else:
            for name in ("forward", "_enel_bf16_key", "_enel_bf16"):
                module.__dict__.pop(name, None)
    return count


def cached_layers(model: nn.Module) -> int:
    """How many of the backbone's linear layers hold a bf16 copy right now (for tests and the benchmark)."""
    return sum(1 for m in _backbone_linears(model) if m.__dict__.get("_enel_bf16") is not None)
