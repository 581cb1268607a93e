"""Class-word pre-alignment of the point embedding before stage 1 (``word_prealign``, enel.train.prealign), and the
colour-word alignment of the colour skip it runs alongside."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from enel.data.procedural.colors import PALETTE
from enel.errors import ConfigError
from enel.model import EnelForCausalLM
from enel.train.prealign import class_vocabulary, point_terms, prealign_point_tokens, restrict_words
from enel.train.recipe import load_recipe

POINTS = {"embed_dim": 12, "group_size": 8, "projector_hidden": [64], "num_points": 256, "input_points": 256,
          "color_skip": True}
PALETTE3 = torch.tensor([[0.85, 0.10, 0.10], [0.12, 0.30, 0.85], [0.50, 0.50, 0.50]])  # red, blue, gray


def test_restrict_words_gives_positions_in_the_vocabulary_and_keeps_padding():
    vocab = class_vocabulary([torch.tensor([40, 7]), torch.tensor([12]), torch.tensor([7, 99])])
    assert vocab.tolist() == [7, 12, 40, 99]
    words = torch.tensor([[40, 7, -100], [99, -100, -100], [12, 40, 99]])
    assert restrict_words(words, vocab).tolist() == [[2, 0, -100], [3, -100, -100], [1, 2, 3]]
    with pytest.raises(ConfigError, match="missing from the pre-alignment vocabulary"):
        restrict_words(torch.tensor([[8]]), vocab)
    with pytest.raises(ConfigError, match="set word_prealign.steps=0"):
        class_vocabulary([])


def _reference_loss(tokens: np.ndarray, words: list[list[int]], emb: np.ndarray, vocab: list[int], tau: float):
    """-log mean_t p_t(w) over each sample's words, the softmax over the vocabulary's rows only (brute force)."""
    unit = emb[vocab] / np.linalg.norm(emb[vocab], axis=1, keepdims=True)
    out = []
    for toks, ws in zip(tokens, words):
        t = toks / np.linalg.norm(toks, axis=1, keepdims=True)
        logits = t @ unit.T / tau
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        out.append(np.mean([-math.log(p[:, vocab.index(w)].mean()) for w in ws]))
    return float(np.mean(out))


class _Items(torch.utils.data.Dataset):
    """Clouds of two kinds (flat and tall boxes) named by two class words; every third item has no class."""

    def __init__(self, n: int, words: dict[int, list[int]]):
        g = torch.Generator().manual_seed(1)
        self.items = []
        for i in range(n):
            kind = i % 2
            xyz = torch.rand(256, 3, generator=g) * 2 - 1
            xyz[:, 2 - kind] *= 0.1  # kind 0 is flat in z, kind 1 thin in y
            item = {"point_cloud": torch.cat([xyz / 1.8, torch.full((256, 3), 0.5)], 1)}
            if i % 3:
                item["class_words"] = torch.tensor(words[kind])
            self.items.append(item)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return dict(self.items[i])


def _tiny(seed: int = 0):
    model, _ = EnelForCausalLM.from_backbone("tiny-llama", point_config=POINTS, seed=seed,
                                             objective_config={"name": "hybrid", "word_align": 0.2,
                                                               "word_align_temperature": 0.1})
    return model


def test_the_loss_it_trains_is_the_alignment_over_the_names_vocabulary():
    model = _tiny()
    words = {0: [21, 5], 1: [33]}
    data = _Items(8, words)
    vocab = class_vocabulary([torch.tensor(w) for w in words.values()])
    items = [data[i] for i in (1, 2, 4)]
    clouds = torch.stack([it["point_cloud"] for it in items])
    with torch.no_grad():
        tokens = point_terms(model, clouds)[0]
    from enel.model.objectives import unit_rows, word_alignment_loss

    padded = torch.tensor([[33, -100], [21, 5], [33, -100]])
    emb = model.model.language_model.embed_tokens.weight.detach()
    got = word_alignment_loss(tokens, restrict_words(padded, vocab), unit_rows(emb[vocab]), 0.1)
    want = _reference_loss(tokens.double().numpy(), [[33], [21, 5], [33]], emb.double().numpy(), vocab.tolist(), 0.1)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_prealignment_lowers_the_loss_and_moves_only_the_point_embedding_and_the_projector_mlp():
    model = _tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = _Items(24, {0: [21, 5], 1: [33]})
    vocab = class_vocabulary([torch.tensor([21, 5]), torch.tensor([33])])
    out = prealign_point_tokens(model, data, vocab, steps=40, batch_size=6, lr=1e-2, warmup_steps=5, seed=0,
                                bf16=False, log=lambda *_: None)
    assert out["steps"] == 40 and out["samples"] == 240 and out["vocabulary"] == 3
    assert out["loss_last"] < out["loss_first"] - 0.1
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved and all(n.startswith(("model.point_embedding.", "model.point_projector.net.")) for n in moved)
    assert any(n.startswith("model.point_embedding.") for n in moved)
    assert model.training  # the mode it was in

    again = _tiny()
    prealign_point_tokens(again, data, vocab, steps=40, batch_size=6, lr=1e-2, warmup_steps=5, seed=0, bf16=False,
                          log=lambda *_: None)
    for (n, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(p, q), n  # the same seed, the same weights
    other = _tiny()
    prealign_point_tokens(other, data, vocab, steps=40, batch_size=6, lr=1e-2, warmup_steps=5, seed=1, bf16=False,
                          log=lambda *_: None)
    assert not torch.equal(other.model.point_projector.net[-1].weight, model.model.point_projector.net[-1].weight)


def test_too_few_items_with_class_words_is_a_clear_error():
    data = _Items(6, {0: [21], 1: [33]})  # 4 of them carry words
    with pytest.raises(ConfigError, match="batch_size=5 .* the data has 4"):
        prealign_point_tokens(_tiny(), data, torch.tensor([21, 33]), steps=2, batch_size=5, lr=1e-3,
                              warmup_steps=0, seed=0, bf16=False, log=lambda *_: None)


def test_recipe_settings_are_checked_with_the_fix():
    assert load_recipe("smollm2_stage1").word_prealign["steps"] >= 0
    assert load_recipe("smollm2_stage1", ["word_prealign.lr=1e-3"]).word_prealign["lr"] == 1e-3  # YAML: a string
    for over, match in ((["word_prealign.steps=-1"], "steps and warmup_steps must be 0 or more"),
                        (["word_prealign={steps: 5, epochs: 2}"], "word_prealign takes the keys"),
                        (["word_prealign.steps=5", "objective.word_align=0"], "set objective.word_align > 0"),
                        (["word_prealign.steps=5", "word_prealign.lr=0"], "lr positive"),
                        (["word_prealign.steps=abc"], "whole numbers and lr a number"),
                        (["word_prealign.lr=fast"], "whole numbers and lr a number"),
                        (["word_prealign.steps=2.5"], "whole numbers"),
                        (["word_prealign.steps=.inf"], "whole numbers"), (["word_prealign.lr=.nan"], "lr a number")):
        with pytest.raises(ConfigError, match=match):
            load_recipe("smollm2_stage1", over)
    with pytest.raises(ConfigError, match="stage-1 recipe with point_encoder=embedding"):
        load_recipe("smollm2_stage2", ["word_prealign.steps=5"])


def test_mixed_sources_report_the_class_words_of_the_sources_in_the_mix():
    from enel.data.mixing import MixedDataset

    class Named(_Items):
        def __init__(self, words):
            super().__init__(3, {0: words, 1: words})
            self.words = [torch.tensor(words)]

        def class_words(self):
            return self.words

    a, b, c = Named([4, 5]), Named([6]), Named([4, 5])
    mixed = MixedDataset([a, b, c, _Items(3, {0: [9], 1: [9]})], [1, 0, 1, 1])
    assert sorted(tuple(w.tolist()) for w in mixed.class_words()) == [(4, 5)]  # b has no share; _Items no method


def test_train_prealigns_once_and_records_it_and_a_resumed_run_does_not_redo_it(tmp_path, monkeypatch):
    import enel.train.prealign as prealign
    from enel.data.procedural import synthesize
    from enel.train.run import _procedural_nouns, train

    data = tmp_path / "data"
    synthesize(data, objects_per_category=3, seed=0, num_points=1024, progress=False, categories=["chair", "mug"])
    over = [f"data.root={data}", "data.points=1024_npy", "data.point_file_pattern={object_id}_1024.npy",
            "data.num_points=1024", f"train.output_dir={tmp_path / 'run'}", "objective.word_align=0.2",
            "point_config.color_skip=true", "word_prealign.steps=3", "word_prealign.batch_size=4",
            "train.max_steps=2", "train.save_steps=1"]
    lines = []
    # the tiny tokenizer spells no colour name as one token: twelve of its tokens stand for the palette's names
    palette = torch.tensor(list(PALETTE.values()))
    monkeypatch.setattr(prealign, "colour_vocabulary", lambda tokenizer: (torch.arange(40, 52), palette))
    out = train(load_recipe("tiny_stage1", over), log=lines.append)
    summary = json.loads((tmp_path / "run" / "word_prealign.json").read_text())
    assert summary["colour"]["vocabulary"] == 12 and 0 < summary["colour"]["labelled"] <= 1
    assert any("its colour skip over the 12 colour names" in line for line in lines)
    assert summary["steps"] == 3 and summary["samples"] == 12 and len(summary["losses"]) == 3
    assert summary["vocabulary"] == len({t for w in set(_procedural_nouns(data).values()) for t in _words(out, w)})
    assert any("pre-alignment done" in line for line in lines)
    state = json.loads((out.model_dir / "config.json").read_text())["training_state"]
    assert state["word_prealign"]["steps"] == 3

    lines = []
    train(load_recipe("tiny_stage1", over + ["train.max_steps=3"]), resume=True, log=lines.append)
    assert any("resuming from" in line for line in lines)
    assert not any("pre-alignment" in line for line in lines)


def _words(out, noun: str) -> list[int]:
    from transformers import AutoTokenizer

    from enel.data.modelnet_conversations import class_word_ids

    return class_word_ids(AutoTokenizer.from_pretrained(out.model_dir), noun)


def test_palette_targets_name_the_nearest_colour_within_the_radius_and_skip_colourless_clouds():
    from enel.train.prealign import COLOUR_RADIUS, palette_targets

    g = torch.Generator().manual_seed(0)
    near = PALETTE3[torch.randint(0, 3, (2, 5), generator=g)] + (torch.rand(2, 5, 3, generator=g) - 0.5) * 0.08
    between = ((PALETTE3[0] + PALETTE3[1]) / 2).expand(2, 2, 3)  # a patch straddling red and blue
    rgb = torch.cat([near, between, torch.rand(2, 4, 3, generator=g)], dim=1)  # (2, 11, 3)
    clouds = torch.cat([torch.rand(3, 20, 3, generator=g), torch.rand(3, 20, 3, generator=g)], dim=2)
    clouds[2, :, 3:] = 0.0  # colourless: PointLLM's zero rgb
    colors = torch.cat([rgb, rgb[:1]]) - 0.5  # (3, 11, 3) centred, as the skip receives them
    got = palette_targets(clouds, colors, PALETTE3)

    want = np.full((3, 11), -100)
    pal = PALETTE3.double().numpy()
    for b in range(2):  # brute force
        for t in range(11):
            d = [math.dist(colors[b, t].double().numpy() + 0.5, p) for p in pal]
            if min(d) <= COLOUR_RADIUS:
                want[b, t] = int(np.argmin(d))
    assert got.tolist() == want.tolist()
    assert (got[:, :5] >= 0)[:2].all() and (got[:, 5:7] == -100).all()  # jittered colours named, mixtures not


def test_colour_alignment_loss_is_the_cross_entropy_over_the_colour_names():
    from enel.model.objectives import unit_rows
    from enel.train.prealign import colour_alignment_loss

    g = torch.Generator().manual_seed(0)
    skip, emb = torch.randn(2, 4, 6, generator=g), torch.randn(3, 6, generator=g)
    targets = torch.tensor([[0, -100, 2, 1], [-100, -100, 1, 0]])
    got = colour_alignment_loss(skip, targets, unit_rows(emb), 0.1)
    s, e = skip.double().numpy(), emb.double().numpy()
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    losses = []
    for b, t in zip(*np.nonzero(targets.numpy() >= 0)):
        z = s[b, t] / np.linalg.norm(s[b, t]) @ e.T / 0.1
        losses.append(-(z[targets[b, t]] - np.log(np.exp(z).sum())))
    assert float(got) == pytest.approx(float(np.mean(losses)), rel=1e-5)
    assert colour_alignment_loss(skip, torch.full((2, 4), -100), unit_rows(emb), 0.1) is None


class _Coloured(_Items):
    """The same two kinds of cloud, each painted one palette colour (with a little jitter); every colour among the
    items with class words."""

    def __init__(self, n: int, words: dict[int, list[int]]):
        super().__init__(n, words)
        g = torch.Generator().manual_seed(2)
        for i, item in enumerate(self.items):
            colour = PALETTE3[(i // 3) % 3] + (torch.rand(3, generator=g) - 0.5) * 0.06
            item["point_cloud"][:, 3:] = colour


def test_prealignment_names_each_palette_colour_through_the_skip_at_the_word_scale_and_leaves_the_rest_alone():
    words = {0: [21, 5], 1: [33]}
    data = _Coloured(24, words)
    vocab = class_vocabulary([torch.tensor(w) for w in words.values()])
    colour_ids = torch.tensor([40, 41, 42])
    run = dict(steps=40, batch_size=6, lr=1e-2, warmup_steps=5, seed=0, bf16=False, log=lambda *_: None)
    model, plain = _tiny(), _tiny()
    emb = model.model.language_model.embed_tokens.weight.detach()
    skip = model.model.point_projector.color

    def named() -> list[int]:  # the colour name each palette colour's term reads as
        with torch.no_grad():
            terms = torch.nn.functional.normalize(skip(PALETTE3 - 0.5), dim=-1)
        return (terms @ torch.nn.functional.normalize(emb[colour_ids], dim=-1).t()).argmax(1).tolist()

    assert named() != [0, 1, 2]  # not by construction
    out = prealign_point_tokens(model, data, vocab, colours=(colour_ids, PALETTE3), **run)
    assert named() == [0, 1, 2]
    assert out["colour"]["vocabulary"] == 3 and out["colour"]["labelled"] == 1.0
    assert out["colour"]["loss_last"] < out["colour"]["loss_first"]
    with torch.no_grad():
        rms = skip(PALETTE3 - 0.5).pow(2).mean().sqrt()
    assert float(rms) == pytest.approx(float(emb.pow(2).mean().sqrt()), rel=1e-4)

    # the colour skip's parameters are its own: the rest trains exactly as without it
    prealign_point_tokens(plain, data, vocab, **run)
    for (n, p), q in zip(model.named_parameters(), plain.parameters()):
        if not n.startswith("model.point_projector.color."):
            assert torch.equal(p, q), n
    assert not torch.equal(skip.weight, plain.model.point_projector.color.weight)
