"""Compiled decoding steps: each decoder layer's work around its KV cache update, compiled for one new token.

A decoding step reads every weight of the model once to make one token per sample, so on a CPU its time is the time
to stream the weights from memory; the default one-row products (``nn.Linear``, a BLAS call) stream them well below
the memory's rate, and each of the layers' norms, rotary embeddings and element-wise ops is an operator dispatched
from Python. :class:`CompiledDecoding` replaces, for decoding steps of up to :data:`MAX_SAMPLES` samples, each
layer's forward by two compiled functions (``torch.compile``, inductor) around the eager cache update and attention:

* :func:`attention_inputs`: input norm, q / k / v products, rotary embedding → ``q (B, heads, t, D)``,
  ``k, v (B, kv_heads, t, D)``;
* the cache update (:class:`~enel.model.layout.EnelCache`, a ``DynamicCache``: its length grows every step, so it
  stays out of the compiled code, which then never recompiles for a new length) and the backbone's attention
  function with the layer's key mask from :class:`~enel.model.layout.LayerPlan` (each layer's own, so aggregation
  is covered);
* :func:`layer_output`: output product, residual, post-attention norm, the gated MLP, residual.

Each product is a multiply-and-sum that inductor turns into one loop streaming the weight; the ``lm_head`` product
(:meth:`CompiledDecoding.logits`) likewise. The functions take the weights as arguments, so one compiled graph
serves every layer and step (a second batch size compiles one graph for all batch sizes). Same maths as the layers'
own forward; the products sum in another order, so logits differ from the eager step's in the last bits (~1e-5).
Measurements: docs/training.md, "Speed".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CompiledDecoding", "MAX_SAMPLES", "attention_inputs", "layer_output"]


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``LlamaRMSNorm``: ``(…, H)`` normalised in fp32, scaled by ``weight (H,)``."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


#: the most samples a compiled step decodes: its products stream each weight once per sample, where a BLAS product
#: of many rows reads it once for all, and from about eight samples on the eager step is faster (docs/training.md)
MAX_SAMPLES = 4


def _product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` as a multiply-and-sum: ``x (B, t, K)``, ``weight (N, K)`` → ``(B, t, N)``."""
    out = (x.unsqueeze(-2) * weight).sum(-1)
    return out if bias is None else out + bias


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotary embedding of ``x (B, n, t, D)`` with ``cos, sin (B, 1, t, D)`` (``apply_rotary_pos_emb``)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def attention_inputs(x, norm, wq, wk, wv, bq, bk, bv, cos, sin, head_dim: int, eps: float):
    """A decoder layer up to its cache update.

    Args:
        x: ``(B, t, H)`` the layer's input; ``norm`` ``(H,)`` its input norm's weight.
        wq, wk, wv: ``(heads · D, H)``, ``(kv_heads · D, H)`` ×2; ``bq, bk, bv`` their biases or None.
        cos, sin: ``(B, t, D)`` the rotary embedding of the new tokens' positions.

    Returns:
        ``q (B, heads, t, D)``, ``k (B, kv_heads, t, D)`` (both rotated), ``v (B, kv_heads, t, D)``.
    """
    batch, t, _ = x.shape
    h = _rms_norm(x, norm, eps)
    q = _product(h, wq, bq).view(batch, t, -1, head_dim).transpose(1, 2)
    k = _product(h, wk, bk).view(batch, t, -1, head_dim).transpose(1, 2)
    v = _product(h, wv, bv).view(batch, t, -1, head_dim).transpose(1, 2)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return _rotate(q, cos, sin), _rotate(k, cos, sin), v


def layer_output(x, attended, wo, bo, norm, w_gate, w_up, w_down, eps: float):
    """A decoder layer after its attention: ``x (B, t, H)`` the layer's input, ``attended (B, t, heads · D)``;
    ``wo``, ``bo`` the output product, ``norm (H,)`` the post-attention norm, then the SiLU-gated MLP (no biases).
    Returns the layer's output ``(B, t, H)``."""
    x = x + _product(attended, wo, bo)
    h = _rms_norm(x, norm, eps)
    return x + _product(F.silu(_product(h, w_gate)) * _product(h, w_up), w_down)


class CompiledDecoding:
    """The compiled decoding step of a Llama-family backbone (Llama, Mistral, Qwen2 layers: RMS norms, rotary
    attention, a SiLU-gated MLP without biases, no sliding window).

    ``layer(i, …)`` runs decoder layer ``i`` on new tokens that continue a cached sequence; ``logits`` is the
    ``lm_head`` product. :meth:`supports` says whether a backbone has that structure; the decoder loop keeps
    the layers' own forward for anything else, and for prompts.
    """

    def __init__(self, language_model: nn.Module, lm_head: nn.Linear):
        self.layers = language_model.layers
        self.lm_head = lm_head
        self.attention = _attention_function(language_model)
        self._inputs = torch.compile(attention_inputs)
        self._output = torch.compile(layer_output)
        self._logits = torch.compile(_product)

    @staticmethod
    def supports(language_model: nn.Module, lm_head: nn.Module) -> bool:
        """Every layer has the structure :func:`attention_inputs` and :func:`layer_output` compute."""
        config = language_model.config
        if getattr(config, "hidden_act", None) != "silu" or not isinstance(lm_head, nn.Linear):
            return False
        if _attention_function(language_model) is None:
            return False
        for layer in language_model.layers:
            attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
            norms = (getattr(layer, "input_layernorm", None), getattr(layer, "post_attention_layernorm", None))
            if attn is None or mlp is None or getattr(attn, "sliding_window", None) is not None:
                return False
            if not all(type(n).__name__.endswith("RMSNorm") and hasattr(n, "variance_epsilon") for n in norms):
                return False
            products = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
            products += [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
            if not all(isinstance(p, nn.Linear) for p in products) or any(p.bias is not None for p in products[4:]):
                return False
        return True

    @staticmethod
    def covers(hidden: torch.Tensor) -> bool:
        """Whether a pass on ``hidden (B, t, H)`` is one this step runs: one new token for at most
        :data:`MAX_SAMPLES` samples, no gradients."""
        return hidden.shape[1] == 1 and hidden.shape[0] <= MAX_SAMPLES and not torch.is_grad_enabled()

    def layer(self, i: int, hidden: torch.Tensor, cache, attention_mask: torch.Tensor,
              position_embeddings: tuple[torch.Tensor, torch.Tensor], **_) -> torch.Tensor:
        """Decoder layer ``i`` on ``hidden (B, t, H)``: appends its keys and values to ``cache`` and attends over
        them with ``attention_mask (B, 1, t, past + t)``; returns ``(B, t, H)``."""
        layer = self.layers[i]
        attn, mlp = layer.self_attn, layer.mlp
        cos, sin = position_embeddings
        norm = layer.input_layernorm
        q, k, v = self._inputs(hidden, norm.weight, attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight,
                               attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias, cos, sin, attn.head_dim,
                               norm.variance_epsilon)
        k, v = cache.update(k, v, attn.layer_idx)
        attended, _ = self.attention(attn, q, k, v, attention_mask, dropout=0.0, scaling=attn.scaling)
        attended = attended.reshape(*hidden.shape[:-1], -1)
        norm = layer.post_attention_layernorm
        return self._output(hidden, attended, attn.o_proj.weight, attn.o_proj.bias, norm.weight,
                            mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight, norm.variance_epsilon)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``lm_head(hidden)`` for ``hidden (B, t, H)`` → ``(B, t, vocab)``."""
        # a prompt's last position is a view with the prompt's strides: a copy with its own keeps one compiled graph
        hidden = hidden.clone(memory_format=torch.contiguous_format)
        return self._logits(hidden, self.lm_head.weight, self.lm_head.bias)


def _attention_function(language_model: nn.Module):
    """The attention function the backbone's layers call (``config._attn_implementation``), or None when there is
    none to call from here."""
    from importlib import import_module

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    attn = getattr(language_model.layers[0], "self_attn", None)
    eager = getattr(import_module(type(attn).__module__), "eager_attention_forward", None)
    return ALL_ATTENTION_FUNCTIONS.get_interface(language_model.config._attn_implementation, eager)
