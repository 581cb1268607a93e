"""ModelNet40 as training data: grounded conversations, the validation split, and mixing sources by weight."""

import numpy as np
import pytest
import torch

from enel.data.errors import DatasetError
from enel.data.labels import MODELNET40_CLASSES, modelnet40_vocabulary
from enel.data.mixing import MixedDataset, balanced_order, mixture_counts
from enel.data.modelnet_conversations import (NO_COLOR_ANSWER, ModelNetConversationDataset, conversations_for,
                                              measure, split_by_class)
from enel.data.procedural.colors import COLOR_SYNONYMS


def _box(w, d, h, n=512, seed=0):
    """``(n, 3)`` points uniformly inside a w × d × h box, z up."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-0.5, 0.5, size=(n, 3)) * np.array([w, d, h])).astype(np.float32)


def test_measure_reads_proportions_in_the_z_up_frame():
    tall = measure(_box(0.4, 0.3, 1.0))
    assert tall.build == "tall" and tall.height > 2 * tall.width
    assert measure(_box(1.0, 0.8, 0.2)).build == "flat"
    assert measure(_box(1.0, 0.2, 0.6)).build == "thin"
    assert measure(_box(1.0, 0.9, 0.9)).proportion() == "about as tall as it is wide"
    # hand-computed: height 1.0, width 0.5 -> twice as tall (percentile extents shrink both alike)
    assert measure(_box(0.5, 0.5, 1.0, n=20000)).proportion() == "about 2.0 times as tall as it is wide"


def test_brief_descriptions_keep_proper_names_and_say_what_was_measured():
    rng = np.random.default_rng(0)
    brief = lambda name, box: conversations_for(name, measure(box), ["brief"], rng)[0][1][1]["value"]
    assert brief("tv stand", _box(1.0, 0.9, 0.5)) == "A TV stand, about 2.0 times as wide as it is tall."
    assert brief("xbox", _box(1.0, 0.2, 0.6)) == "A thin Xbox, much wider than it is deep."
    assert brief("table", _box(1.0, 0.8, 0.2)).startswith("A flat, low table, about")
    assert brief("lamp", _box(0.3, 0.3, 1.0)).startswith("A lamp, about 3.")


def test_answers_name_the_class_and_nothing_the_cloud_cannot_tell():
    vocab = modelnet40_vocabulary()
    color_words = {w for ws in COLOR_SYNONYMS.values() for w in ws}
    part_words = {"leg", "legs", "seat", "back", "armrest", "handle", "wheel", "wheels", "pillow", "shade", "wing"}
    rng = np.random.default_rng(0)
    for name in MODELNET40_CLASSES:
        for facts in (measure(_box(0.4, 0.3, 1.0)), measure(_box(1.0, 0.8, 0.2)), measure(_box(1, 1, 1))):
            convs = conversations_for(name, facts, ("grounding", "brief", "shape"), rng)
            for ctype, conv in convs:
                question, answer = conv[0]["value"], conv[1]["value"]
                assert question.startswith("<point>\n") and vocab.named(question) == []
                words = set(answer.lower().replace(".", " ").replace(",", " ").split())
                assert not words & color_words and not words & part_words, answer
                named = vocab.named(answer)
                if answer == NO_COLOR_ANSWER or "compared with its width" in question:
                    assert named == [] and ("colour" in question.lower() or "color" in question.lower()
                                            or answer == f"It is {facts.proportion()}."), (question, answer)
                else:  # identify, completion and brief answers name the class, and only it
                    assert named == [name], (name, answer)
            kinds = [c for c, _ in convs]
            assert kinds.count("single_round") == 2 + 1 + 2 and kinds.count("simple_description") == 1


def test_the_validation_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(5), [10, 20, 3, 1, 40])
    train, val = split_by_class(labels, 0.1, seed=3)
    assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == len(labels)
    assert np.bincount(labels[val], minlength=5).tolist() == [1, 2, 1, 0, 4]
    again_train, again_val = split_by_class(labels, 0.1, seed=3)
    assert (again_val == val).all() and not (split_by_class(labels, 0.1, seed=4)[1] == val).all()
    with pytest.raises(DatasetError, match="val_fraction"):
        split_by_class(labels, 1.5)


def _tiny_tokenizer():
    from enel.model import EnelForCausalLM

    from tests.conftest import TINY_POINTS

    model, tok = EnelForCausalLM.from_backbone("tiny-llama", point_config=TINY_POINTS, seed=0)
    return model, tok


def test_dataset_items_are_colorless_normalised_clouds_with_the_class_as_the_answer():
    model, tok = _tiny_tokenizer()
    points = np.stack([_box(0.4, 0.3, 1.0, n=300, seed=i) for i in range(4)])
    labels = np.array([8, 33, 8, 33])
    ds = ModelNetConversationDataset(points, labels, MODELNET40_CLASSES, ["a", "b", "c", "d"], [1, 2], tok,
                                     template=model.config.conversation_template,
                                     num_point_tokens=model.config.num_point_tokens, num_points=128)
    assert len(ds) == 2 * 3  # two identify requests and the completion prompt per object
    item = ds[0]
    cloud = item["point_cloud"]
    assert cloud.shape == (128, 6) and torch.all(cloud[:, 3:] == 0)
    assert torch.allclose(cloud[:, :3].mean(0), torch.zeros(3), atol=1e-5)
    assert torch.isclose(cloud[:, :3].norm(dim=1).max(), torch.tensor(1.0))
    answer = tok.decode(item["input_ids"][item["labels"] != -100])
    assert item["object_id"] == "b" and modelnet40_vocabulary().first(answer) == "table", answer
    # the class words the alignment reads are the answer's class name, as tokens of the answer itself
    assert tok.decode(item["class_words"]) == " table"
    answer_ids = item["input_ids"][item["labels"] != -100].tolist()
    words = item["class_words"].tolist()
    assert any(answer_ids[i:i + len(words)] == words for i in range(len(answer_ids))), (answer_ids, words)


def test_class_words_drop_the_article_and_keep_the_answers_spelling():
    from enel.data.modelnet_conversations import class_word_ids

    _, tok = _tiny_tokenizer()
    for name, words in (("night stand", " night stand"), ("airplane", " airplane"), ("stairs", " flight of stairs"),
                        ("xbox", " Xbox"), ("tv stand", " TV stand")):
        assert tok.decode(class_word_ids(tok, name)) == words


def test_augmented_items_follow_torch_s_seed():
    model, tok = _tiny_tokenizer()
    points = np.stack([_box(0.4, 0.3, 1.0, n=300, seed=i) for i in range(2)])

    ds = ModelNetConversationDataset(points, np.array([8, 8]), MODELNET40_CLASSES, ["a", "b"], [0, 1], tok,
                                     template=model.config.conversation_template,
                                     num_point_tokens=model.config.num_point_tokens, num_points=64, augment=True)
    torch.manual_seed(0)
    a = ds[0]["point_cloud"]
    torch.manual_seed(0)
    assert torch.equal(a, ds[0]["point_cloud"])
    assert not torch.equal(a, ds[0]["point_cloud"])  # a fresh draw is another augmentation
    plain = ModelNetConversationDataset(points, np.array([8, 8]), MODELNET40_CLASSES, ["a", "b"], [0, 1], tok,
                                        template=model.config.conversation_template,
                                        num_point_tokens=model.config.num_point_tokens, num_points=64)
    assert torch.equal(plain[0]["point_cloud"], plain[0]["point_cloud"])  # no augmentation: the same FPS subset
    with pytest.raises(DatasetError, match="augmentation setting"):
        ModelNetConversationDataset(points, np.array([8, 8]), MODELNET40_CLASSES, ["a", "b"], [0], tok,
                                    template=model.config.conversation_template,
                                    num_point_tokens=model.config.num_point_tokens, num_points=64,
                                    augment={"roll": 3})


class _Range(torch.utils.data.Dataset):
    def __init__(self, tag, n):
        self.tag, self.n = tag, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return (self.tag, i)


def test_mixing_weights_are_honoured_over_a_seeded_epoch():
    mix = MixedDataset([_Range("a", 100), _Range("b", 7)], [3, 1], ["a", "b"], length=400, seed=0)
    items = [mix[i] for i in range(len(mix))]
    counts = {t: sum(1 for s, _ in items if s == t) for t in "ab"}
    assert counts == {"a": 300, "b": 100} == mix.counts
    # the small source is repeated evenly: each of its 7 items 14 or 15 times
    b_seen = np.bincount([i for s, i in items if s == "b"], minlength=7)
    assert b_seen.min() >= 14 and b_seen.max() <= 15
    # a large source under-weighted gives distinct items, no repeats
    a_seen = [i for s, i in items if s == "a"]
    assert len(a_seen) == 300 and len(set(a_seen)) == 100  # 100 items, 3 laps
    assert [mix[i] for i in range(20)] == [MixedDataset([_Range("a", 100), _Range("b", 7)], [3, 1], length=400,
                                                        seed=0)[i] for i in range(20)]
    assert mixture_counts([1, 1, 1], 10) == [4, 3, 3]
    with pytest.raises(DatasetError, match="weights"):
        MixedDataset([_Range("a", 3)], [-1.0])


def test_balanced_order_gives_every_class_an_equal_share():
    groups = np.array([0] * 50 + [1] * 7 + [2] * 3)  # 60 items: a large class and two small ones
    order = balanced_order(groups, seed=0)
    assert order.shape == (60,)
    assert np.bincount(groups[order]).tolist() == [20, 20, 20]
    # the large class gives distinct items, the small ones are repeated evenly
    assert len(set(order[groups[order] == 0].tolist())) == 20
    small = np.bincount(order[groups[order] == 2], minlength=60)[57:]
    assert small.min() >= 6 and small.max() <= 7
    assert np.array_equal(order, balanced_order(groups, seed=0))
    assert not np.array_equal(order, balanced_order(groups, seed=1))
    assert np.bincount(groups[balanced_order(groups, length=10)]).tolist() == [4, 3, 3]
    with pytest.raises(DatasetError, match="groups"):
        balanced_order([])


def test_a_balanced_dataset_gives_every_class_as_many_samples():
    model, tok = _tiny_tokenizer()
    points = np.stack([_box(0.4, 0.3, 1.0, n=200, seed=i) for i in range(6)])
    labels = np.array([8, 8, 8, 8, 8, 33])  # five chairs, one table
    kw = dict(template=model.config.conversation_template, num_point_tokens=model.config.num_point_tokens,
              num_points=64)
    ids = [str(i) for i in range(6)]
    plain = ModelNetConversationDataset(points, labels, MODELNET40_CLASSES, ids, range(6), tok, **kw)
    balanced = ModelNetConversationDataset(points, labels, MODELNET40_CLASSES, ids, range(6), tok, balance=True, **kw)
    assert len(balanced) == len(plain) == 18

    def classes(ds):
        return [modelnet40_vocabulary().first(tok.decode(it["input_ids"][it["labels"] != -100])) for it in
                (ds[i] for i in range(len(ds)))]

    assert classes(plain).count("table") == 3
    assert classes(balanced).count("table") == 9 and classes(balanced).count("chair") == 9
