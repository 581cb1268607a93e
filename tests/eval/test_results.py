"""PointLLM-format results files: exact round trips, PointLLM's own layout, validation errors, resume."""

from __future__ import annotations

import json

import pytest

from enel.errors import ConfigError, EnelError
from enel.eval.results import (ResultsFile, ResultsFormatError, append_results, atomic_write_json, make_record,
                               open_results, pending, read_results, record_key, write_results)

# A file exactly as PointLLM's eval_objaverse.py writes it: json.dump(indent=2), ASCII escapes, no metadata.
POINTLLM_OBJAVERSE = {
    "prompt": "Caption this 3D model in detail.",
    "results": [
        {"object_id": "8ce6a5c4bd1a4e2f9ad4fd2a3b5c7e10", "ground_truth": "A wooden chair with a curved back",
         "model_output": "This is a 3D model of a brown wooden chair. It has four legs."},
        {"object_id": "0f4e9b6e8b0d4a26a3c2d1e0f9a8b7c6", "ground_truth": "caf\u00e9 table",
         "model_output": ""},
    ],
}
# eval_modelnet_cls.py: integer object_id (dataset index) and ground_truth, plus label_name.
POINTLLM_MODELNET = {
    "prompt": "What is this?",
    "results": [
        {"object_id": 0, "ground_truth": 0, "model_output": "An airplane.", "label_name": "airplane"},
        {"object_id": 1, "ground_truth": 36, "model_output": "A TV stand.", "label_name": "tv stand"},
    ],
}


def test_round_trip_is_exact(tmp_path):
    rf = ResultsFile(
        prompt="What is this?",
        results=[make_record(3, 8, "a chair ☺", label_name="chair"),
                 make_record("uid-1", "Spiral staircase", "stairs {braces}", question="What?", question_id="q1")],
        metadata={"model": "runs/tiny/model", "split": "val_200", "seed": 0, "command": "enel eval generate"},
        extra={"note": [1, 2.5, None, True]},
    )
    path = write_results(tmp_path / "r.json", rf)
    back = read_results(path)
    assert back == rf
    assert list(back.results[0]) == ["object_id", "ground_truth", "model_output", "label_name"]
    first = path.read_bytes()
    write_results(path, back)
    assert path.read_bytes() == first


@pytest.mark.parametrize("doc", [POINTLLM_OBJAVERSE, POINTLLM_MODELNET])
def test_pointllm_written_files_load_and_survive_rewrite(tmp_path, doc):
    src = tmp_path / "PointLLM_out.json"
    with open(src, "w") as f:
        json.dump(doc, f, indent=2)  # PointLLM's call: ASCII escapes, no trailing newline
    rf = read_results(src)
    assert rf.prompt == doc["prompt"] and rf.results == doc["results"] and rf.metadata is None and rf.extra == {}
    assert isinstance(rf.results[0]["object_id"], type(doc["results"][0]["object_id"]))
    write_results(tmp_path / "again.json", rf)
    assert json.loads((tmp_path / "again.json").read_text()) == doc


def test_metadata_key_goes_last_and_other_keys_are_kept(tmp_path):
    doc = {"prompt": "p", "results": [], "extra_top": {"a": 1}, "enel": {"seed": 0}}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    rf = read_results(tmp_path / "r.json")
    assert rf.metadata == {"seed": 0} and rf.extra == {"extra_top": {"a": 1}}
    assert list(rf.to_json()) == ["prompt", "results", "extra_top", "enel"]


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON (line 1"),
    ("[1, 2]", "top level is a list"),
    ('{"prompt": "p"}', 'no "results" key'),
    ('{"results": []}', 'no "prompt" key'),
    ('{"prompt": "p", "results": {}}', '"results" is dict'),
    ('{"prompt": "p", "results": [{"object_id": 1, "ground_truth": 2}]}', "results[0] lacks model_output"),
    ('{"prompt": "p", "results": [{"object_id": 1, "ground_truth": 2, "model_output": 5}]}', "expected a string"),
    ('{"prompt": "p", "results": ["x"]}', "results[0] is a str"),
    ('{"prompt": "p", "results": [], "enel": 3}', '"enel" is int'),
])
def test_malformed_files_name_the_file_and_problem(tmp_path, text, fragment):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ResultsFormatError) as info:
        read_results(path)
    assert fragment in str(info.value) and str(path) in str(info.value)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, EnelError)


def test_missing_file(tmp_path):
    with pytest.raises(ResultsFormatError, match="results file not found"):
        read_results(tmp_path / "nope.json")


def test_append_and_resume(tmp_path):
    path = tmp_path / "gen.json"
    records = [make_record(i, f"gt {i}", f"out {i}") for i in range(5)]
    append_results(path, records[:2], prompt="What is this?", metadata={"seed": 0})
    rf = open_results(path, "What is this?")
    assert rf.done_ids() == {0, 1} and rf.metadata == {"seed": 0}
    todo = pending(records, rf.done_ids())
    assert [r["object_id"] for r in todo] == [2, 3, 4]
    append_results(path, todo, prompt="What is this?")
    assert [r["object_id"] for r in read_results(path).results] == [0, 1, 2, 3, 4]
    with pytest.raises(ResultsFormatError, match="already in the file"):
        append_results(path, [records[0]], prompt="What is this?")
    with pytest.raises(ResultsFormatError, match="holds results for prompt"):
        open_results(path, "This is an object of ")
    assert open_results(tmp_path / "new.json", "p").results == []


def test_record_key_prefers_question_id():
    assert record_key({"object_id": "o", "question_id": 7}) == 7
    assert record_key({"object_id": "o"}) == "o"


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind
