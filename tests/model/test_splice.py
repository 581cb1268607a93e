"""The special-token embeddings of the splice: values against a per-position reference, and a gradient that is the
same on every backward pass (the same seed must train the same model on a multi-threaded CPU)."""

from __future__ import annotations

import numpy as np
import torch

from enel.model.splice import PointTokenIds, embed_text

IDS = PointTokenIds(patch=100, start=101, end=102)


def _batch(seed: int = 0, b: int = 8, t: int = 65, hidden: int = 64):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 100, (b, t), generator=g)
    input_ids[:, 8], input_ids[:, 9:42], input_ids[:, 42] = IDS.start, IDS.patch, IDS.end
    input_ids[0, -3:] = 150  # beyond the vocabulary: embedded as id 0, as the splice documents
    emb = torch.nn.Embedding(100, hidden)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(100, hidden, generator=g))
    special = torch.nn.Parameter(torch.randn(3, hidden, generator=g))
    return emb, special, input_ids


def test_special_tokens_take_their_rows_and_other_tokens_their_word_embeddings():
    emb, special, input_ids = _batch()
    out = embed_text(emb, special, input_ids, IDS).detach().numpy()
    w, s = emb.weight.detach().numpy(), special.detach().numpy()
    kind = {IDS.patch: 0, IDS.start: 1, IDS.end: 2}
    for b, row in enumerate(input_ids.tolist()):
        for t, tid in enumerate(row):
            expect = s[kind[tid]] if tid in kind else w[tid if tid < 100 else 0]
            np.testing.assert_array_equal(out[b, t], expect)


def test_special_gradient_is_the_sum_over_its_positions_and_bit_identical_on_every_pass():
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))  # the race needs more than one thread
    try:
        grads = _repeated_gradients()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:]), "the special-token gradient changed between passes"


def _repeated_gradients() -> list[torch.Tensor]:
    emb, special, input_ids = _batch(b=16, t=128, hidden=576)
    upstream = torch.randn(*input_ids.shape, 576, generator=torch.Generator().manual_seed(1))
    grads = []
    for _ in range(12):
        special.grad = None
        embed_text(emb, special, input_ids, IDS).backward(upstream)
        grads.append(special.grad.clone())
    ids, up = input_ids.numpy(), upstream.double().numpy()
    for k, tid in enumerate(IDS.as_tuple()):
        np.testing.assert_allclose(grads[0][k].double().numpy(), up[ids == tid].sum(0), rtol=1e-5, atol=1e-4)
    return grads
