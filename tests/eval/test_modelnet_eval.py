"""ModelNet40 scoring in PointLLM's protocol: strict first-named class, per-class means, the CLI."""

import json

import numpy as np
import pytest

from enel.data.labels import MODELNET40_CLASSES
from enel.eval.modelnet import PROCEDURAL_OVERLAP, pick_per_class, score_classification


def test_scores_by_hand():
    answers = ["This is a chair.", "a chair or a table", "It is a couch.", "I do not know.", "This is a sofa."]
    truths = ["chair", "table", "sofa", "sofa", "chair"]
    s = score_classification(answers, truths, MODELNET40_CLASSES)
    # right: 1st (chair), 3rd (couch = sofa); wrong: "a chair or a table" for a table, no class, sofa for a chair
    assert s["overall_accuracy"] == pytest.approx(40.0)
    # per class: chair 1/2, table 0/1, sofa 1/2 -> mean of 50, 0, 50
    assert s["per_class"]["chair"]["accuracy"] == 50.0 and s["per_class"]["table"]["accuracy"] == 0.0
    assert s["mean_class_accuracy"] == pytest.approx(100 / 3)
    assert s["label_mentioned_rate"] == pytest.approx(60.0)  # the lenient rate also counts "... or a table"
    assert s["no_class_named"] == 1
    assert {"truth": "table", "answer": "chair", "count": 1} in s["confusions"]
    assert list(s["per_class"]) == ["chair", "sofa", "table"]  # ModelNet40's label order


def test_pick_per_class_keeps_index_order():
    labels = np.array([0, 1, 0, 0, 1, 2])
    assert pick_per_class(labels, [0, 1, 2, 3, 4, 5], 2).tolist() == [0, 1, 2, 4, 5]
    assert pick_per_class(labels, [5, 3], None).tolist() == [5, 3]


def test_train_and_val_selections_partition_the_archive():
    from enel.errors import ConfigError
    from enel.eval.modelnet import select_objects

    labels = np.repeat(np.arange(40), 10)
    val = select_objects(labels, MODELNET40_CLASSES, split="val")
    train = select_objects(labels, MODELNET40_CLASSES, split="train")
    assert len(val) == 40 and len(train) == 360  # one of every class's ten held out
    assert sorted(set(val.tolist()) | set(train.tolist())) == list(range(400)) and not set(val) & set(train)
    assert np.bincount(labels[train], minlength=40).tolist() == [9] * 40
    assert select_objects(labels, MODELNET40_CLASSES, split="train", per_class=2).tolist() == \
        pick_per_class(labels, train, 2).tolist()
    with pytest.raises(ConfigError, match="choose val, train or all"):
        select_objects(labels, MODELNET40_CLASSES, split="test")


def test_the_overlap_classes_are_modelnet_classes_the_generator_builds():
    from enel.data.procedural.scoring import CATEGORY_SYNONYMS

    assert len(PROCEDURAL_OVERLAP) == 17 and set(PROCEDURAL_OVERLAP) <= set(MODELNET40_CLASSES)
    assert set(PROCEDURAL_OVERLAP) - {"cup"} <= set(CATEGORY_SYNONYMS) and "mug" in CATEGORY_SYNONYMS


def test_eval_modelnet_command_on_the_overlap_classes(tmp_path, capsys):
    from enel.cli import main
    from enel.model import EnelForCausalLM
    from enel.model.saving import save_model

    from tests.conftest import TINY_POINTS

    model, tok = EnelForCausalLM.from_backbone("tiny-llama", point_config=TINY_POINTS, seed=0)
    save_model(model, tok, tmp_path / "model")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 2)
    np.savez(tmp_path / "mn_train.npz", points=rng.normal(size=(80, 64, 3)).astype(np.float16),
             labels=labels.astype(np.int16), class_names=np.asarray(MODELNET40_CLASSES),
             object_ids=np.asarray([f"o{i}" for i in range(80)]))
    code = main(["eval", "modelnet", "--model", str(tmp_path / "model"), "--archive", str(tmp_path / "mn_train.npz"),
                 "--split", "all", "--classes", "overlap", "--per-class", "1", "--out", str(tmp_path / "ev")])
    assert code == 0
    summary = json.loads((tmp_path / "ev" / "modelnet40_all_overlap_summary.json").read_text())
    assert summary["objects"] == 17 and set(summary["prompts"]) == {"what", "completion"}
    assert summary["split"] == "all"  # the report's provenance line reads it
    assert list(summary["prompts"]["what"]["per_class"]) == list(PROCEDURAL_OVERLAP)
    records = json.loads((tmp_path / "ev" / "modelnet40_all_overlap_what.json").read_text())["results"]
    assert [r["label_name"] for r in records] == list(PROCEDURAL_OVERLAP)
    assert main(["eval", "modelnet", "--model", str(tmp_path / "model"), "--archive", str(tmp_path / "mn_train.npz"),
                 "--per-class", "0"]) == 2
    assert "--per-class must be at least 1" in capsys.readouterr().err
    assert main(["eval", "modelnet", "--model", str(tmp_path / "model"), "--archive", str(tmp_path / "mn_train.npz"),
                 "--batch-size", "0", "--out", str(tmp_path / "ev0")]) == 2
    assert "batch_size must be positive, got 0" in capsys.readouterr().err
