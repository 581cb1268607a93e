"""Benchmark generation: PointLLM's results layout for every source and task, seeded batches, resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import save_tiny_model_and_data  # noqa: E402
from enel.data.errors import DatasetError  # noqa: E402
from enel.data.labels import MODELNET40_CLASSES  # noqa: E402
from enel.data.prompts import PROMPT_LISTS  # noqa: E402
from enel.errors import ConfigError  # noqa: E402
from enel.eval.generate import generate_benchmark, load_benchmark, pick_round_robin  # noqa: E402
from enel.eval.judge import infer_eval_type  # noqa: E402
from enel.eval.metrics import is_modelnet_results  # noqa: E402
from enel.eval.results import ResultsFormatError, read_results  # noqa: E402




@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny model, a loaded Assistant and a procedural dataset (2 categories × 2 test objects)."""
    from enel.inference import Assistant

    root = tmp_path_factory.mktemp("gen")
    _, _, model_dir, data = save_tiny_model_and_data(root)
    return {"model": model_dir, "data": data, "assistant": Assistant.from_folder(model_dir), "root": root}


def run(tiny, **kw):
    kw.setdefault("max_new_tokens", 2)
    kw.setdefault("log", None)
    return generate_benchmark(tiny["model"], assistant=tiny["assistant"], **kw)


class Interrupt(Exception):
    pass


def test_procedural_captioning_is_pointllm_layout_and_resumes_after_interruption(tiny, tmp_path):
    def stop_after_first(done, total):
        raise Interrupt

    with pytest.raises(Interrupt):
        run(tiny, source="procedural", task="captioning", data_dir=tiny["data"], out=tmp_path, batch_size=3,
            on_batch=stop_after_first)
    path = tmp_path / "procedural_test_captioning_prompt2.json"
    partial = read_results(path)
    assert [r["object_id"] for r in partial.results] == ["proc_chair_00002", "proc_chair_00003", "proc_table_00002"]
    assert partial.metadata["complete"] is False and partial.metadata["completed"] == 3

    calls = []
    assert run(tiny, source="procedural", task="captioning", data_dir=tiny["data"], out=tmp_path, batch_size=3,
               on_batch=lambda d, t: calls.append((d, t))) == path
    assert calls == [(4, 4)]  # only the unfinished batch ran
    resumed = read_results(path)
    ids = [r["object_id"] for r in resumed.results]
    assert ids == ["proc_chair_00002", "proc_chair_00003", "proc_table_00002", "proc_table_00003"]  # file order
    assert resumed.results[:3] == partial.results  # finished records untouched
    raw = json.loads(path.read_text())
    assert list(raw) == ["prompt", "results", "enel"] and raw["prompt"] == PROMPT_LISTS[2]
    assert list(raw["results"][0])[:3] == ["object_id", "ground_truth", "model_output"]
    assert raw["results"][0]["ground_truth"].startswith("a cyan chair")  # the reference caption
    meta = raw["enel"]
    assert meta["complete"] is True and meta["source"] == "procedural" and meta["split"] == "test"
    assert meta["seed"] == 0 and meta["num_points"] == 1024 and meta["decoding"]["do_sample"] is False
    assert "generate_benchmark" in meta["command"]

    fresh = run(tiny, source="procedural", task="captioning", data_dir=tiny["data"], out=tmp_path / "x.json",
                batch_size=3)
    assert [r["model_output"] for r in read_results(fresh).results] == [r["model_output"] for r in resumed.results]


def test_resume_refuses_other_settings(tiny, tmp_path):
    run(tiny, source="procedural", task="classification", data_dir=tiny["data"], out=tmp_path, limit=1)
    with pytest.raises(ResultsFormatError, match="num_points=1024, not 512"):
        run(tiny, source="procedural", task="classification", data_dir=tiny["data"], out=tmp_path, limit=1,
            num_points=512)
    with pytest.raises(ResultsFormatError, match="seed"):
        run(tiny, source="procedural", task="classification", data_dir=tiny["data"], out=tmp_path, limit=1, seed=3)


def test_procedural_classification_and_qa_records(tiny, tmp_path):
    cls = read_results(run(tiny, source="procedural", task="classification", prompt_index=1,
                           data_dir=tiny["data"], out=tmp_path, batch_size=4))
    assert cls.prompt == "This is an object of "
    assert [r["category"] for r in cls.results] == ["chair", "chair", "table", "table"]
    assert all(isinstance(r["correct"], bool) and "label_name" not in r for r in cls.results)
    assert infer_eval_type(cls) == "open-free-form-classification"

    qa_path = run(tiny, source="procedural", task="qa", data_dir=tiny["data"], out=tmp_path, batch_size=4, limit=5)
    assert qa_path.name == "procedural_test_qa.json"
    qa = read_results(qa_path)
    assert qa.prompt == "{question}" and len(qa.results) == 5
    assert len({r["question_id"] for r in qa.results}) == 5
    assert all(r["question"] and "<point>" not in r["question"] and r["ground_truth"] for r in qa.results)
    assert infer_eval_type(qa) == "qa"


def test_modelnet_classification_on_a_small_npz(tiny, tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(5, 1024, 3)).astype(np.float32)
    normals = xyz / np.linalg.norm(xyz, axis=2, keepdims=True)
    labels = np.array([8, 33, 0, 19, 36], dtype=np.int64)
    npz = tmp_path / "modelnet_test.npz"
    np.savez(npz, points=np.concatenate([xyz, normals], axis=2), labels=labels,
             class_names=np.array(MODELNET40_CLASSES))

    path = run(tiny, source="modelnet", task="classification", prompt_index=1, modelnet=npz, out=tmp_path,
               batch_size=4)
    assert path.name == "ModelNet_classification_prompt1.json"
    rf = read_results(path)
    assert [r["object_id"] for r in rf.results] == [0, 1, 2, 3, 4]
    assert [r["ground_truth"] for r in rf.results] == labels.tolist()
    assert [r["label_name"] for r in rf.results] == ["chair", "table", "airplane", "lamp", "tv stand"]
    assert is_modelnet_results(rf) and rf.metadata["split"] == "test"

    subset = load_benchmark("modelnet", "classification", modelnet=npz, limit=3, seed=0)
    ids = [it.object_id for it in subset.items]
    assert len(ids) == 3 and ids == sorted(ids)  # a seeded subset in index order
    assert ids == [it.object_id for it in load_benchmark("modelnet", "classification", modelnet=npz, limit=3).items]
    cloud = subset.items[0].load(256)
    assert cloud.shape == (256, 6) and np.all(cloud[:, 3:] == 0)  # black, as PointLLM feeds ModelNet40

    with pytest.raises(ConfigError, match="classification benchmark"):
        load_benchmark("modelnet", "captioning", modelnet=npz)
    with pytest.raises(ConfigError, match="prompt 0 or 1"):
        load_benchmark("modelnet", "classification", prompt_index=2, modelnet=npz)


def test_objaverse_gt_file_and_questions_file(tiny, tmp_path):
    points = tmp_path / "8192_npy"
    points.mkdir()
    rng = np.random.default_rng(1)
    for oid in ("aaa111", "bbb222"):
        np.save(points / f"{oid}_8192.npy", np.concatenate([rng.normal(size=(1500, 3)), rng.random((1500, 3))], 1))
    gt = tmp_path / "PointLLM_brief_description_val_200_GT.json"
    gt.write_text(json.dumps([
        {"object_id": oid, "conversations": [{"from": "human", "value": "<point>\nWhat is this?"},
                                             {"from": "gpt", "value": cap}]}
        for oid, cap in (("aaa111", "a red chair"), ("bbb222", "a wooden table"))]))
    path = run(tiny, source="objaverse", task="captioning", anno=gt, point_dir=points, out=tmp_path, batch_size=2)
    assert path.name == "PointLLM_brief_description_val_200_GT_Objaverse_captioning_prompt2.json"
    rf = read_results(path)
    assert [(r["object_id"], r["ground_truth"]) for r in rf.results] == [("aaa111", "a red chair"),
                                                                          ("bbb222", "a wooden table")]
    assert rf.metadata["split"] == "PointLLM_brief_description_val_200_GT"

    questions = tmp_path / "mmvet_questions.json"
    questions.write_text(json.dumps([
        {"question_id": 1, "object_id": "aaa111", "question": "What colour is it?", "answer": "Red.",
         "category": "General Visual Recognition"},
        {"question_id": 2, "object_id": "bbb222", "question": "What is it made of?"}]))
    qa = read_results(run(tiny, source="objaverse", task="qa", questions=questions, point_dir=points, out=tmp_path))
    assert [r["question_id"] for r in qa.results] == [1, 2]
    assert qa.results[0]["question_type"] == "General Visual Recognition" and qa.results[1]["ground_truth"] == ""

    (points / "bbb222_8192.npy").unlink()
    with pytest.raises(DatasetError, match="1 of 2 point files are missing"):
        load_benchmark("objaverse", "captioning", anno=gt, point_dir=points)
    with pytest.raises(ConfigError, match="--anno"):
        load_benchmark("objaverse", "captioning", point_dir=points)


def test_round_robin_keeps_categories_balanced():
    rows = [{"category": c, "i": i} for c in "aab" for i in range(3)]
    assert [r["category"] for r in pick_round_robin(rows, 4)] == ["a", "b", "a", "b"]
    assert pick_round_robin(rows, None) == rows


def test_cli_generate(tiny, tmp_path, capsys):
    from enel.cli import main

    rc = main(["eval", "generate", "--model", str(tiny["model"]), "--data", str(tiny["data"]), "--task",
               "classification", "--limit", "2", "--max-new-tokens", "2", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith("procedural_test_classification_prompt0.json")
    assert len(read_results(out).results) == 2
    assert main(["eval", "generate", "--model", str(tiny["model"]), "--source", "modelnet", "--task",
                 "classification"]) == 2  # a one-line error, no traceback
    assert capsys.readouterr().err.startswith("error: modelnet needs --modelnet")


def test_sampled_decoding_is_seeded(tiny, tmp_path):
    def outputs(name, seed):
        path = run(tiny, source="procedural", task="captioning", data_dir=tiny["data"], out=tmp_path / name,
                   batch_size=2, sample=True, seed=seed, max_new_tokens=6)
        rf = read_results(path)
        assert rf.metadata["decoding"]["do_sample"] is True and rf.metadata["decoding"]["top_k"] == 50
        return [r["model_output"] for r in rf.results]

    first = outputs("a.json", 0)
    assert outputs("b.json", 0) == first
    assert outputs("c.json", 1) != first
