"""The sequence layout of stage-2 aggregation: masks, positions, shrinking and regrowing the point block."""

import torch

from enel.model import layout as L


def test_default_position_ids_ignore_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert L.default_position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    # the last two entries only (two tokens appended to a cache of three)
    assert L.default_position_ids(mask, past=3).tolist() == [[1, 2], [3, 4]]


def test_additive_mask_is_causal_and_masks_keys():
    key_mask = torch.tensor([[False, True, True, True]])
    full = L.additive_mask(key_mask, 4, torch.float32)
    assert full.shape == (1, 1, 4, 4)
    allowed = (full[0, 0] == 0).int().tolist()
    assert allowed == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]]
    assert float(full.min()) == torch.finfo(torch.float32).min
    # the last two queries over four keys (a decoding step with two new tokens)
    step = L.additive_mask(key_mask, 2, torch.bfloat16)
    assert step.dtype == torch.bfloat16
    assert (step[0, 0] == 0).int().tolist() == [[0, 1, 1, 0], [0, 1, 1, 1]]


def _toy_layout():
    """Two left-padded samples with a 4-token point block, and one text-only sample.

    Sample 0 (length 8, one pad): ``pad t t B B B B t``; sample 1: ``t t B B B B t t``; sample 2: text only.
    """
    key_mask = torch.tensor([
        [False, True, True, True, True, True, True, True],
        [True] * 8,
        [False, False, True, True, True, True, True, True],
    ])
    positions = L.default_position_ids(key_mask.long())
    block_start = torch.tensor([3, 2, -1])
    point_valid = torch.tensor([[True] * 4, [True] * 4, [False] * 4])
    centres = torch.arange(3 * 4 * 3, dtype=torch.float32).view(3, 4, 3)
    return L.SequenceLayout(key_mask, positions, block_start, point_valid, centres)


def test_block_gather_scatter_and_add():
    lay = _toy_layout()
    hidden = torch.arange(3 * 8, dtype=torch.float32).view(3, 8, 1)
    block = lay.gather_block(hidden)
    assert block[0, :, 0].tolist() == [3, 4, 5, 6]
    assert block[1, :, 0].tolist() == [10, 11, 12, 13]
    written = lay.scatter_block(hidden, torch.full((3, 4, 1), -1.0))
    assert written[0, :, 0].tolist() == [0, 1, 2, -1, -1, -1, -1, 7]
    assert torch.equal(written[2], hidden[2])  # a sample without a cloud is untouched
    added = lay.add_to_block(hidden, torch.ones(3, 4, 1))
    assert added[1, :, 0].tolist() == [8, 9, 11, 12, 13, 14, 14, 15]
    assert torch.equal(added[2], hidden[2])


def _shrink_toy(residual=False):
    """Sample 0: groups {0, 1}, {2, 3}; sample 1: {0}, {1, 2}, {3}: a coarse block of 3 slots."""
    lay = _toy_layout()
    hidden = torch.randn(3, 8, 2)
    new_block = torch.tensor([[[1.0, 1], [2, 2], [0, 0]], [[3, 3], [4, 4], [5, 5]], [[0, 0]] * 3])
    new_valid = torch.tensor([[True, True, False], [True, True, True], [False, False, False]])
    block_pos = torch.gather(lay.position_ids, 1, lay.block_index())
    new_pos = torch.stack([block_pos[0, [0, 2, 0]], block_pos[1, [0, 1, 3]], torch.zeros(3, dtype=torch.long)])
    new_centres = torch.zeros(3, 3, 3)
    group_of = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 2], [-1, -1, -1, -1]])
    out, tr = L.shrink(lay, hidden, new_block, new_valid, new_pos, new_centres, group_of)
    return lay, hidden, out, tr


def test_shrink_shortens_the_block_and_keeps_text_positions():
    lay, hidden, out, tr = _shrink_toy()
    coarse = tr.coarse
    # the samples with a cloud lose one slot; the text-only sample keeps its 8 tokens, so the batch stays at 8
    assert out.shape == (3, 8, 2)
    assert coarse.block_len == 3
    # sample 0: pad t t G0 G1 [empty slot] t [right pad]
    assert coarse.key_mask[0].tolist() == [False, True, True, True, True, False, True, False]
    assert coarse.position_ids[0].tolist()[:5] == [0, 0, 1, 2, 4]
    assert int(coarse.position_ids[0, 6]) == int(lay.position_ids[0, 7])  # text keeps its position
    assert torch.equal(out[0, 1:3], hidden[0, 1:3])
    assert torch.equal(out[0, 6], hidden[0, 7])
    assert out[0, 3:5, 0].tolist() == [1.0, 2.0]
    # sample 1: t t G0 G1 G2 t t [right pad]
    assert coarse.key_mask[1].tolist() == [True] * 7 + [False]
    assert coarse.position_ids[1].tolist()[:7] == [0, 1, 2, 3, 5, 6, 7]
    assert out[1, 2:5, 0].tolist() == [3.0, 4.0, 5.0]
    assert torch.equal(out[1, 5:7], hidden[1, 6:8])
    # the text-only sample is copied as it is
    assert torch.equal(out[2], hidden[2])
    assert torch.equal(coarse.key_mask[2], lay.key_mask[2])
    assert torch.equal(coarse.position_ids[2], lay.position_ids[2])
    assert coarse.point_valid[2].tolist() == [False, False, False]


def test_regrow_undoes_shrink_and_copies_groups_back():
    lay, hidden, out, tr = _shrink_toy()
    back = L.regrow(tr, out, residual=False)
    assert back.shape == hidden.shape
    text = lay.key_mask.clone()
    for b, s in ((0, 3), (1, 2)):
        text[b, s : s + 4] = False
    assert torch.equal(back[text], hidden[text])  # every text token returns to its place unchanged
    assert back[0, 3:7, 0].tolist() == [1.0, 1.0, 2.0, 2.0]
    assert back[1, 2:6, 0].tolist() == [3.0, 4.0, 4.0, 5.0]
    with_res = L.regrow(tr, out, residual=True)
    assert torch.allclose(with_res[0, 3:7], back[0, 3:7] + hidden[0, 3:7])
    assert torch.equal(with_res[2], hidden[2])


def test_shrink_and_regrow_pass_gradients():
    lay = _toy_layout()
    hidden = torch.randn(3, 8, 2, requires_grad=True)
    block = lay.gather_block(hidden)
    new_block = torch.stack([block[:, :2].mean(1), block[:, 2:].mean(1)], 1)  # groups {0, 1}, {2, 3}
    block_pos = torch.gather(lay.position_ids, 1, lay.block_index())
    out, tr = L.shrink(lay, hidden, new_block, torch.tensor([[True, True]] * 2 + [[False, False]]),
                       block_pos[:, [0, 2]], None, torch.tensor([[0, 0, 1, 1]] * 2 + [[-1] * 4]))
    back = L.regrow(tr, out * 2, residual=False)
    back.sum().backward()
    grad = hidden.grad
    assert torch.equal(grad[2], torch.full((8, 2), 2.0))  # text rows: d(2x)/dx
    # a block token feeds one group mean copied to two tokens: 2 · 2 · 1/2 = 2
    assert torch.allclose(grad[0, 3:7], torch.full((4, 2), 2.0))


def test_layer_key_masks_extend_each_layer_and_reorder():
    prompt = [torch.tensor([[True, True, False], [True, True, True]]), torch.tensor([[True, False], [True, True]])]
    masks = L.LayerKeyMasks(prompt, prompt_len=5)
    full = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]]).bool()
    assert masks.for_step(1, full).tolist() == [[True, False, True, True], [True, True, True, True]]
    assert masks.for_step(0, full).shape == (2, 5)
    masks.reorder(torch.tensor([1, 1]))
    assert masks.masks[1].tolist() == [[True, True], [True, True]]


def test_a_decoding_steps_masks_are_built_once_per_distinct_prompt_mask():
    shared = torch.tensor([[True, True, False], [True, True, True]])
    coarse = torch.tensor([[True, False], [True, True]])
    masks = L.LayerKeyMasks([shared, shared, coarse, shared], prompt_len=5)
    full = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]]).bool()
    got = masks.additive_masks(full, 2, torch.float32)
    for layer, mask in enumerate(got):  # each layer's mask is the one it would build on its own
        assert torch.equal(mask, L.additive_mask(masks.for_step(layer, full), 2, torch.float32))
    assert got[0] is got[1] is got[3] and got[2] is not got[0]
    masks.reorder(torch.tensor([1, 0]))  # beam search: layers that shared a prompt mask still share one
    assert masks.masks[0] is masks.masks[1] is masks.masks[3]
    assert masks.masks[0].tolist() == [[True, True, True], [True, True, False]]


def test_the_cache_moves_its_prompt_masks_with_the_batch():
    """EnelCache: generate's batch expansion and selection act on the prompt masks as on the keys."""
    shared = torch.tensor([[True, True, False], [True, True, True]])
    coarse = torch.tensor([[True, False], [True, True]])
    cache = L.EnelCache()
    keys = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 1, 3, 1).contiguous()
    cache.update(keys, keys.clone(), 0)
    cache.key_masks = L.LayerKeyMasks([shared, coarse, shared], prompt_len=3)
    cache.batch_repeat_interleave(2)
    assert cache.layers[0].keys[:, 0, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert cache.key_masks.masks[0].tolist() == [[True, True, False]] * 2 + [[True, True, True]] * 2
    assert cache.key_masks.masks[1].tolist() == [[True, False]] * 2 + [[True, True]] * 2
    assert cache.key_masks.masks[0] is cache.key_masks.masks[2]
    cache.batch_select_indices(torch.tensor([3, 0]))
    assert cache.layers[0].keys[:, 0, 0, 0].tolist() == [1.0, 0.0]
    assert cache.key_masks.masks[1].tolist() == [[True, True], [True, False]]
    # without masks (a prompt the model has not seen), a step reads every layer's mask off the attention mask
    plain = L.EnelCache()
    plain.update(keys, keys.clone(), 0)
    full = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]).bool()
    assert [m.tolist() for m in plain.step_masks(full, 2).masks] == [full[:, :3].tolist()] * 2
