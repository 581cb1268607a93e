"""Shared test set-up: offline, one torch thread, and the tiny model + procedural data the eval tests share."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# A point embedding small enough for tests that still gives the paper's 129 tokens.
TINY_POINTS = {"embed_dim": 24, "group_size": 8, "projector_hidden": [64], "num_points": 1024}


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny tensors run fastest on one thread, and a second OpenMP thread on a busy 2-core machine can make an
    op 10–40× slower; tests that time or need more threads set their own."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_tiny_model_and_data(root, *, objects_per_category: int = 4, categories=("chair", "table")):
    """A saved tiny-Llama ENEL model and a small procedural dataset under ``root``; returns both paths."""
    from enel.data.procedural.generate import synthesize
    from enel.model.saving import save_model
    from enel.model import EnelForCausalLM

    model, tok = EnelForCausalLM.from_backbone("tiny-llama", point_config=TINY_POINTS, seed=0)
    model.eval()
    model_dir = save_model(model, tok, root / "model")
    data = root / "data"
    synthesize(data, objects_per_category=objects_per_category, categories=list(categories), num_points=1024,
               progress=False, val_fraction=0.0, test_fraction=0.5)
    return model, tok, model_dir, data


def labelled_batch(tok, n_tokens: int, answers: list[str]):
    """Right-padded training batch of "What is this?" → each answer: ids, attention mask, labels ``(B, L)`` (-100 on
    padding and everything but the answers)."""
    import torch

    from enel.data.conversation import encode_conversation

    encs = [
        encode_conversation(tok, [{"from": "human", "value": "<point>\nWhat is this?"}, {"from": "gpt", "value": a}],
                            template="chat", num_point_tokens=n_tokens)
        for a in answers
    ]
    length = max(len(e.input_ids) for e in encs)
    ids = torch.full((len(encs), length), tok.pad_token_id)
    labels = torch.full((len(encs), length), -100)
    mask = torch.zeros(len(encs), length, dtype=torch.long)
    for i, e in enumerate(encs):
        n = len(e.input_ids)
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e.input_ids), torch.tensor(e.labels), 1
    return ids, mask, labels
