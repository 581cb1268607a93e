"""Saving and loading an ENEL model folder: ``config.json``, safetensors weights and the tokenizer.

* :func:`model_config_file` — the folder's ``config.json``, or a :class:`~enel.errors.ModelLoadError` that says
  how to get a model.
* :func:`load_model` — ``(model, tokenizer)`` in eval mode, float32 unless told otherwise.
* :func:`save_model` — model + tokenizer written atomically (a temporary sibling renamed into place), so a
  reader never sees half a folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..errors import ModelLoadError

__all__ = ["model_config_file", "load_model", "save_model"]


def model_config_file(path: str | os.PathLike) -> Path:
    """``<path>/config.json`` of a model folder; :class:`ModelLoadError` saying how to get one when it is missing."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise ModelLoadError(
            f"no ENEL model in {Path(path)}: run `enel quickstart` to train one, pass --model DIR, or create an "
            "untrained one with `enel init DIR`"
        )
    return cfg


def load_model(path: str | os.PathLike, dtype: torch.dtype | None = None):
    """Load ``(model, tokenizer)`` from a folder written by :func:`save_model` / training."""
    from transformers import AutoTokenizer

    from .modeling_enel import EnelForCausalLM

    folder = model_config_file(path).parent
    try:
        model = EnelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not load the ENEL model in {folder}: {exc}") from None
    model.eval()
    return model, tokenizer


def save_model(model, tokenizer, path: str | os.PathLike) -> Path:
    """Write model + tokenizer to ``path`` atomically (a temporary sibling renamed into place)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target
