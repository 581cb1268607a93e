"""enel.data.collate: padding, labels, point clouds, offsets, and a collated batch through the tiny model."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from enel.data.collate import MODEL_INPUT_KEYS, EnelCollator, model_inputs  # noqa: E402
from enel.data.errors import DatasetError  # noqa: E402
from enel.data.pointllm import PointLLMDataset  # noqa: E402

PAD, START, PATCH, END = 0, 90, 91, 92


def item(ids, labels=None, cloud=None, oid=None):
    ids = torch.tensor(ids, dtype=torch.long)
    out = {"input_ids": ids, "labels": torch.tensor(labels if labels is not None else ids.tolist(), dtype=torch.long),
           "point_cloud": cloud, "object_id": oid}
    return out


def with_block(prefix, answer, n_patch=3):
    """ids: prefix, <point_start>, patches, <point_end>, answer; labels only on the answer."""
    ids = list(prefix) + [START] + [PATCH] * n_patch + [END] + list(answer)
    labels = [-100] * (len(ids) - len(answer)) + list(answer)
    return ids, labels


def cloud(n=16, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random((n, 6)).astype(np.float32))


@pytest.fixture
def collate():
    return EnelCollator(PAD, point_start_token_id=START, point_end_token_id=END)


# ----------------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------------
def test_class_words_become_point_words_padded_with_minus_100(collate):
    a_ids, a_lab = with_block([5], [7])
    b_ids, b_lab = with_block([5], [8])
    a = {**item(a_ids, a_lab, cloud(), "a"), "class_words": torch.tensor([40, 41])}
    b = item(b_ids, b_lab, cloud(seed=1), "b")  # a source that does not know the class
    c = {**item(b_ids, b_lab, cloud(seed=2), "c"), "class_words": [42]}
    batch = collate([a, b, c])
    assert batch["point_words"].tolist() == [[40, 41], [-100, -100], [42, -100]]
    assert "point_words" in model_inputs(batch)
    assert "point_words" not in collate([b, b])  # no item knows its class: no key, the model's default
    text_only = {**item([5, 6, 7]), "class_words": [40]}
    with pytest.raises(DatasetError, match="class_words but no point block"):
        collate([text_only])
    with pytest.raises(DatasetError, match="non-empty, non-negative"):
        collate([{**a, "class_words": []}])


def test_right_padding_masks_and_labels(collate):
    a_ids, a_lab = with_block([5, 6], [7, PAD])  # the answer ends in the pad id (SmolLM2 pads with <|im_end|>)
    b_ids, b_lab = with_block([5], [8])
    batch = collate([item(a_ids, a_lab, cloud(), "a"), item(b_ids, b_lab, cloud(seed=1), "b")])
    assert batch["input_ids"].shape == (2, 9) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][0].tolist() == a_ids
    assert batch["input_ids"][1].tolist() == b_ids + [PAD, PAD]
    assert batch["attention_mask"].tolist() == [[1] * 9, [1] * 7 + [0, 0]]
    assert batch["labels"][0].tolist() == a_lab  # the answer's final pad-id token keeps its label
    assert batch["labels"][1].tolist() == b_lab + [-100, -100]
    assert batch["point_offsets"].tolist() == [2, 1]
    assert batch["object_ids"] == ["a", "b"]


def test_left_padding_shifts_tokens_and_offsets(collate):
    collate.padding_side = "left"
    a_ids, a_lab = with_block([5, 6, 6, 6], [7])
    b_ids, b_lab = with_block([5], [8])
    batch = collate([item(a_ids, a_lab, cloud()), item(b_ids, b_lab, cloud(seed=1))])
    assert batch["input_ids"][1].tolist() == [PAD] * 3 + b_ids
    assert batch["attention_mask"][1].tolist() == [0] * 3 + [1] * len(b_ids)
    assert batch["labels"][1].tolist() == [-100] * 3 + b_lab
    assert batch["point_offsets"].tolist() == [4, 4]
    for b in range(2):
        assert int(batch["input_ids"][b, batch["point_offsets"][b]]) == START


def test_items_without_labels_give_no_labels(collate):
    batch = collate([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}])
    assert "labels" not in batch and batch["point_clouds"] is None
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, PAD, PAD]]
    assert batch["object_ids"] == [None, None] and batch["point_offsets"].tolist() == [-1, -1]
    with pytest.raises(DatasetError, match="some items have labels"):
        collate([item([1, 2]), {"input_ids": [4]}])


# ----------------------------------------------------------------------------------------------------------
# Point clouds
# ----------------------------------------------------------------------------------------------------------
def test_mixed_batch_stacks_the_clouds_in_order(collate):
    c0, c2 = cloud(seed=0), cloud(seed=2)
    a_ids, a_lab = with_block([5], [7])
    batch = collate([item(a_ids, a_lab, c0, "a"), item([5, 6, 7], oid="text"), item(a_ids, a_lab, c2, "c")])
    clouds = batch["point_clouds"]
    assert isinstance(clouds, torch.Tensor) and clouds.shape == (2, 16, 6)
    assert torch.equal(clouds[0], c0) and torch.equal(clouds[1], c2)
    assert batch["point_offsets"].tolist() == [1, -1, 1]


def test_clouds_of_different_sizes_become_a_per_sample_list(collate):
    c0, c2 = cloud(16), cloud(24, seed=2)
    a_ids, a_lab = with_block([5], [7])
    batch = collate([item(a_ids, a_lab, c0), item([5, 6, 7]), item(a_ids, a_lab, c2)])
    clouds = batch["point_clouds"]
    assert isinstance(clouds, list) and len(clouds) == 3
    assert torch.equal(clouds[0], c0) and clouds[1] is None and torch.equal(clouds[2], c2)


def test_cloud_and_block_must_agree(collate):
    a_ids, a_lab = with_block([5], [7])
    with pytest.raises(DatasetError, match=r"item 0 \(object 'x'\) has a point block but no point cloud"):
        collate([item(a_ids, a_lab, None, "x")])
    with pytest.raises(DatasetError, match=r"item 1 \(object 'y'\) has a point cloud but no <point_start>"):
        collate([item(a_ids, a_lab, cloud()), item([1, 2], cloud=cloud(), oid="y")])
    two_blocks = a_ids + a_ids
    with pytest.raises(DatasetError, match="2 <point_start> tokens"):
        collate([item(two_blocks, two_blocks, cloud())])
    with pytest.raises(DatasetError, match="labels have length"):
        collate([item([1, 2, 3], [1, 2])])
    with pytest.raises(DatasetError, match="empty list"):
        collate([])


# ----------------------------------------------------------------------------------------------------------
# Truncation, model inputs, construction
# ----------------------------------------------------------------------------------------------------------
def test_max_length_cuts_text_but_never_a_point_block():
    collate = EnelCollator(PAD, point_start_token_id=START, point_end_token_id=END, max_length=7)
    a_ids, a_lab = with_block([5], [7, 8, 9, 10])  # block ends at index 4: a cut at 7 keeps it
    batch = collate([item(a_ids, a_lab, cloud())])
    assert batch["input_ids"][0].tolist() == a_ids[:7] and batch["labels"][0].tolist() == a_lab[:7]
    late_ids, late_lab = with_block([5, 5, 5, 5], [7])  # block ends at index 7: a cut at 7 would drop <point_end>
    with pytest.raises(DatasetError, match="would cut its point block"):
        collate([item(late_ids, late_lab, cloud(), "late")])
    no_end = EnelCollator(PAD, point_start_token_id=START, max_length=7)
    with pytest.raises(DatasetError, match="needs point_end_token_id"):
        no_end([item(a_ids, a_lab, cloud())])
    assert no_end([item(list(range(1, 12)))])["input_ids"].shape == (1, 7)  # text-only: cut freely


def test_model_inputs_keep_only_forward_arguments(collate):
    a_ids, a_lab = with_block([5], [7])
    batch = collate([item(a_ids, a_lab, cloud(), "a")])
    inputs = model_inputs(batch)
    assert set(inputs) == {"input_ids", "attention_mask", "labels", "point_clouds"}
    assert set(MODEL_INPUT_KEYS) == set(inputs) | {"point_words"}  # point_words: only items that know their class
    assert inputs["input_ids"] is batch["input_ids"]
    lean = EnelCollator(PAD, point_start_token_id=START, return_extras=False)([item(a_ids, a_lab, cloud())])
    assert set(lean) == set(inputs)


def test_constructor_checks():
    with pytest.raises(DatasetError, match="padding_side"):
        EnelCollator(PAD, point_start_token_id=START, padding_side="middle")
    with pytest.raises(DatasetError, match="pad_token_id"):
        EnelCollator(None, point_start_token_id=START)
    with pytest.raises(DatasetError, match="max_length"):
        EnelCollator(PAD, point_start_token_id=START, max_length=0)


# ----------------------------------------------------------------------------------------------------------
# End to end: files → dataset → collator → tiny model
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from enel.model.modeling_enel import EnelForCausalLM

    torch.manual_seed(0)
    model, tok = EnelForCausalLM.from_backbone("tiny-llama", seed=0)
    return model, tok


def test_collator_from_tokenizer(tiny):
    model, tok = tiny
    collate = EnelCollator.from_tokenizer(tok, padding_side="left")
    assert collate.pad_token_id == tok.pad_token_id
    assert collate.point_start_token_id == model.config.point_start_token_id
    assert collate.point_end_token_id == model.config.point_end_token_id
    assert collate.padding_side == "left"


def test_collated_batch_trains_the_tiny_model(tmp_path, tiny):
    model, tok = tiny
    rng = np.random.default_rng(0)
    pts = tmp_path / "8192_npy"
    pts.mkdir()
    records = []
    for i, (oid, n) in enumerate([("o1", 300), ("o2", 500)]):
        np.save(pts / f"{oid}_8192.npy", rng.random((n, 6)).astype(np.float32))
        records.append({"object_id": oid, "conversation_type": "simple_description", "conversations": [
            {"from": "human", "value": "<point>\nWhat is this?"}, {"from": "gpt", "value": f"Object {i}, a box."}]})
    records.append({"object_id": "t", "conversation_type": "single_round", "conversations": [
        {"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]})
    anno = tmp_path / "brief.json"
    anno.write_text(json.dumps(records))

    ds = PointLLMDataset.for_model(model.config, tok, anno, pts, num_points=256)
    assert ds.num_point_tokens == model.config.num_point_tokens and ds.template == model.config.conversation_template
    collate = EnelCollator.from_tokenizer(tok)
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["point_clouds"].shape == (2, 256, 6)
    assert batch["point_offsets"][2] == -1 and (batch["point_offsets"][:2] >= 0).all()

    model.train()
    out = model(**model_inputs(batch))
    assert out.loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.model.point_embedding.parameters() if p.grad is not None]
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)  # the clouds reached the loss
    model.zero_grad()

    # clouds at their stored sizes: a per-sample list with None for the text-only sample
    raw = PointLLMDataset.for_model(model.config, tok, anno, pts, num_points=None)
    listed = collate([raw[i] for i in range(len(raw))])
    assert isinstance(listed["point_clouds"], list) and listed["point_clouds"][2] is None
    assert [c.shape[0] for c in listed["point_clouds"][:2]] == [300, 500]
    model.eval()
    with torch.no_grad():
        loss = model(**model_inputs(listed)).loss
    assert torch.isfinite(loss)
