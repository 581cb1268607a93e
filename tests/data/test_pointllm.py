"""enel.data.pointllm: PointLLM-format files written here (npy + JSON) and read back."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from enel.data import pointllm as P  # noqa: E402
from enel.data.conversation import IGNORE_INDEX, encode_conversation  # noqa: E402
from enel.data.errors import DatasetError, DatasetWarning  # noqa: E402
from enel.data.pointllm import (  # noqa: E402
    CORRUPT_COLOR_IDS,
    PointLLMDataset,
    load_benchmark_gt,
    load_point_file,
    read_annotations,
)
from enel.errors import EnelError  # noqa: E402
from enel.model.backbones import tiny_tokenizer  # noqa: E402
from enel.model.splice import add_point_tokens  # noqa: E402
from enel.points.transforms import pc_norm, resample  # noqa: E402

NPT = 8  # point tokens per block: small, so tests stay fast


@pytest.fixture(scope="module")
def tok():
    t = tiny_tokenizer()
    add_point_tokens(t)
    return t


def brief(oid, caption="A small red box.", ctype="simple_description", question="What is this?"):
    rec = {"object_id": oid, "conversations": [{"from": "human", "value": "<point>\n" + question},
                                              {"from": "gpt", "value": caption}]}
    if ctype is not None:
        rec["conversation_type"] = ctype
    return rec


def write_cloud(folder, oid, n=300, seed=0, cols=6, name="{object_id}_8192.npy"):
    rng = np.random.default_rng(seed)
    arr = rng.random((n, cols)).astype(np.float32)
    arr[:, :3] = arr[:, :3] * 5 + 3  # off-centre and larger than the unit sphere: normalisation shows
    path = folder / name.format(object_id=oid)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return arr


def write_json(path, records):
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def layout(tmp_path):
    """Three objects with points, a brief JSON and a complex JSON, as PointLLM lays them out."""
    pts = tmp_path / "8192_npy"
    pts.mkdir()
    arrays = {oid: write_cloud(pts, oid, seed=i) for i, oid in enumerate(["a1", "b2", "c3"])}
    brief_json = write_json(tmp_path / "brief.json", [brief("a1"), brief("b2", "A blue chair."), brief("c3", ctype=None)])
    complex_json = write_json(tmp_path / "complex.json", [
        brief("a1", "It is a red box with a lid and four corners.", "detailed_description", "Describe it in detail."),
        {"object_id": "b2", "conversation_type": "multi_round", "conversations": [
            {"from": "human", "value": "<point>\nWhat colour is it?"}, {"from": "gpt", "value": "Blue."},
            {"from": "human", "value": "How many legs?"}, {"from": "gpt", "value": "Four."}]},
        brief("c3", "It holds things.", "single_round", "What is it for?"),
    ])
    return {"dir": tmp_path, "pts": pts, "arrays": arrays, "brief": brief_json, "complex": complex_json}


# ----------------------------------------------------------------------------------------------------------
# Reading files back
# ----------------------------------------------------------------------------------------------------------
def test_items_match_the_files_and_the_conversation_encoder(layout, tok):
    ds = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT)
    assert len(ds) == 3 and ds.object_ids == ["a1", "b2", "c3"]
    recs = json.loads(layout["brief"].read_text())
    for i, rec in enumerate(recs):
        item = ds[i]
        assert set(item) == {"input_ids", "labels", "point_cloud", "object_id"}
        enc = encode_conversation(tok, rec["conversations"], template="chat", num_point_tokens=NPT)
        assert item["input_ids"].dtype == torch.long and item["input_ids"].tolist() == enc.input_ids
        assert item["labels"].dtype == torch.long and item["labels"].tolist() == enc.labels
        raw = layout["arrays"][rec["object_id"]]
        expected = np.concatenate([pc_norm(raw[:, :3]), raw[:, 3:6]], axis=1)
        assert item["point_cloud"].dtype == torch.float32 and item["point_cloud"].shape == (300, 6)
        np.testing.assert_allclose(item["point_cloud"].numpy(), expected, atol=1e-6)
        assert item["object_id"] == rec["object_id"]
    assert ds[-1]["object_id"] == "c3"
    with pytest.raises(IndexError):
        ds[3]


def test_class_names_give_the_listed_objects_the_tokens_of_their_name(layout, tok):
    ds = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT,
                         class_names={"a1": "night stand", "c3": "box", "zz": "chair"})
    want = {"a1": tok(" night stand", add_special_tokens=False)["input_ids"],
            "c3": tok(" box", add_special_tokens=False)["input_ids"]}
    for i in range(3):
        item = ds[i]
        if item["object_id"] in want:
            assert item["class_words"].dtype == torch.long and item["class_words"].tolist() == want[item["object_id"]]
        else:
            assert "class_words" not in item  # b2's class is not known
    ds[0]["class_words"][0] = -1
    assert ds[0]["class_words"].tolist() == want["a1"]  # items are private copies


def test_procedural_nouns_read_the_generated_objects(tmp_path):
    from enel.train.run import _procedural_nouns

    assert _procedural_nouns(tmp_path) is None  # not procedural data: no classes known
    rows = [{"object_id": "proc_mug_00001", "category": "mug", "noun": "cup", "split": "train"},
            {"object_id": "proc_fan_00002", "category": "fan", "noun": "desk fan", "split": "test"}]
    (tmp_path / "objects.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _procedural_nouns(tmp_path) == {"proc_mug_00001": "cup", "proc_fan_00002": "desk fan"}


def test_normalisation_centres_and_scales_xyz_and_keeps_rgb(layout, tok):
    ds = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT)
    cloud = ds[1]["point_cloud"].numpy()
    np.testing.assert_allclose(cloud[:, :3].mean(0), 0, atol=1e-5)
    assert np.linalg.norm(cloud[:, :3], axis=1).max() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(cloud[:, 3:], layout["arrays"]["b2"][:, 3:6])


def test_loading_is_memory_mapped_and_items_are_private_copies(layout, tok, monkeypatch):
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(P.np, "load", spy)
    ds = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT)
    cloud = ds[0]["point_cloud"]
    assert calls and all(c.get("mmap_mode") == "r" and c.get("allow_pickle") is False for c in calls)
    cloud[:] = 0  # writable, and writing to it leaves the file alone
    assert not np.all(np.load(layout["pts"] / "a1_8192.npy") == 0)


def test_clouds_are_prepared_once_per_object_and_items_stay_private(layout, tok, monkeypatch):
    """The cloud cache: a second item of an object reads no file, gives the cloud a fresh read gives (seeded
    resampling: the same array), and writing into one item's cloud leaves the next item's alone."""
    reads = []
    real = P.read_point_array
    monkeypatch.setattr(P, "read_point_array", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    ds = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, num_points=64,
                         resample_method="random", seed=3)
    first = ds[0]["point_cloud"]
    first[:] = 0
    again = ds[0]["point_cloud"]
    assert len(reads) == 1
    fresh = real(layout["pts"] / "a1_8192.npy", num_points=64, resample_method="random",
                 seed=P.object_seed(3, "a1"))
    np.testing.assert_array_equal(again.numpy(), fresh)
    monkeypatch.setattr(P, "CLOUD_CACHE_BYTES", 2 * fresh.nbytes)  # room for two clouds: the oldest goes
    ds[1], ds[2], ds[0]
    assert [r.name for r in reads] == ["a1_8192.npy", "b2_8192.npy", "c3_8192.npy", "a1_8192.npy"]
    assert list(ds._cloud_cache) == ["c3", "a1"]


def test_conversation_type_filter_default_type_and_file_order(layout, tok):
    both = [layout["brief"], layout["complex"]]
    ds = PointLLMDataset(both, layout["pts"], tok, num_point_tokens=NPT)
    assert len(ds) == 6 and ds.object_ids == ["a1", "b2", "c3", "a1", "b2", "c3"]
    # c3's brief record has no conversation_type: it counts as simple_description
    assert [ds.conversation_type(i) for i in range(3)] == ["simple_description"] * 3
    stage1 = PointLLMDataset(both, layout["pts"], tok, num_point_tokens=NPT, conversation_types=["simple_description"])
    assert len(stage1) == 3 and stage1.stats["filtered_by_type"] == 3
    stage2 = PointLLMDataset(both, layout["pts"], tok, num_point_tokens=NPT,
                             conversation_types=["detailed_description", "single_round", "multi_round"])
    assert [stage2.conversation_type(i) for i in range(3)] == ["detailed_description", "multi_round", "single_round"]
    one = PointLLMDataset(both, layout["pts"], tok, num_point_tokens=NPT, conversation_types="multi_round")
    assert one.object_ids == ["b2"]
    assert one.where(0) == f"{layout['complex']} record 1"
    # the multi-round answers are both labelled
    labelled = tok.decode([t for t in one[0]["labels"].tolist() if t != IGNORE_INDEX])
    assert "Blue." in labelled and "Four." in labelled


def test_filter_that_matches_nothing_names_the_types_present(layout, tok):
    with pytest.raises(DatasetError, match=r"simple_description \(3\)"):
        PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, conversation_types=["single_rond"])


def test_resampling_fps_default_and_seeded_random(layout, tok):
    ds = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, num_points=64)
    raw = layout["arrays"]["a1"]
    expected = resample(raw, 64, method="fps")
    got = ds[0]["point_cloud"].numpy()
    assert got.shape == (64, 6)
    np.testing.assert_allclose(got[:, :3], pc_norm(expected[:, :3]), atol=1e-6)  # resample, then normalise
    np.testing.assert_array_equal(got[:, 3:], expected[:, 3:6])

    rnd = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, num_points=64,
                          resample_method="random", seed=7)
    again = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, num_points=64,
                            resample_method="random", seed=7, conversation_types=["simple_description"])
    other = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, num_points=64,
                            resample_method="random", seed=8)
    a, b, c = rnd[0]["point_cloud"], again[0]["point_cloud"], other[0]["point_cloud"]
    assert torch.equal(a, rnd[0]["point_cloud"]) and torch.equal(a, b)  # same points every epoch and dataset
    assert not torch.equal(a, c)
    # more points than stored: padded with duplicates of stored points
    up = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, num_points=500)
    assert up[0]["point_cloud"].shape == (500, 6)
    with pytest.raises(DatasetError, match="resample_method"):
        PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, resample_method="grid")
    with pytest.raises(DatasetError, match="num_points"):
        PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, num_points=0)


# ----------------------------------------------------------------------------------------------------------
# Colour
# ----------------------------------------------------------------------------------------------------------
def test_corrupt_color_ids_dropped_only_with_color(tmp_path, tok):
    pts = tmp_path / "p"
    bad = sorted(CORRUPT_COLOR_IDS)
    for i, oid in enumerate(["good", *bad]):
        write_cloud(pts, oid, seed=i)
    anno = write_json(tmp_path / "a.json", [brief("good"), brief(bad[0]), brief(bad[1])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PointLLM's documented drop is counted, not warned about
        colored = PointLLMDataset(anno, pts, tok, num_point_tokens=NPT)
    assert colored.object_ids == ["good"] and colored.stats["corrupt_colour"] == 2
    plain = PointLLMDataset(anno, pts, tok, num_point_tokens=NPT, use_color=False)
    assert plain.object_ids == ["good", *bad] and plain.stats["corrupt_colour"] == 0


def test_use_color_false_keeps_six_channels_with_zero_color_and_accepts_xyz_files(tmp_path, tok):
    pts = tmp_path / "p"
    raw = write_cloud(pts, "xyzonly", cols=3)
    anno = write_json(tmp_path / "a.json", [brief("xyzonly")])
    ds = PointLLMDataset(anno, pts, tok, num_point_tokens=NPT, use_color=False)
    cloud = ds[0]["point_cloud"].numpy()
    assert cloud.shape == (300, 6)
    np.testing.assert_allclose(cloud[:, :3], pc_norm(raw), atol=1e-6)
    assert not cloud[:, 3:].any()
    colored = PointLLMDataset(anno, pts, tok, num_point_tokens=NPT)
    with pytest.raises(DatasetError, match=r"xyzonly_8192\.npy: expected an \(N, 6\).*use_color=False"):
        colored[0]
    # a coloured file: the colour is zeroed, the geometry is the same as with colour
    write_cloud(pts, "rgb", seed=5)
    anno2 = write_json(tmp_path / "b.json", [brief("rgb")])
    plain = PointLLMDataset(anno2, pts, tok, num_point_tokens=NPT, use_color=False)[0]["point_cloud"]
    full = PointLLMDataset(anno2, pts, tok, num_point_tokens=NPT)[0]["point_cloud"]
    assert plain.shape == (300, 6) and not plain[:, 3:].any() and full[:, 3:].any()
    assert torch.equal(plain[:, :3], full[:, :3])


def test_bad_point_file_contents_raise_naming_the_file(tmp_path, tok):
    pts = tmp_path / "p"
    pts.mkdir()
    arr = np.random.default_rng(0).random((50, 6)).astype(np.float32)
    np.save(pts / "nan_8192.npy", np.where(np.arange(50)[:, None] == 3, np.nan, arr))
    np.save(pts / "bytes_8192.npy", np.concatenate([arr[:, :3], arr[:, 3:] * 255], axis=1))
    np.save(pts / "flat_8192.npy", arr[:, 0])
    (pts / "junk_8192.npy").write_bytes(b"not numpy")
    anno = write_json(tmp_path / "a.json", [brief(o) for o in ("nan", "bytes", "flat", "junk")])
    ds = PointLLMDataset(anno, pts, tok, num_point_tokens=NPT)
    for i, pattern in enumerate([r"nan_8192\.npy: contains NaN", r"bytes_8192\.npy: colours range over \[.*255",
                                 r"flat_8192\.npy: expected an \(N, 6\)", r"junk_8192\.npy: not a readable"]):
        with pytest.raises(DatasetError, match=pattern):
            ds[i]


# ----------------------------------------------------------------------------------------------------------
# Skips and errors
# ----------------------------------------------------------------------------------------------------------
def test_missing_point_files_are_skipped_with_one_counted_warning(layout, tok):
    recs = json.loads(layout["brief"].read_text()) + [brief("gone1"), brief("gone2")]
    anno = write_json(layout["dir"] / "more.json", recs)
    with pytest.warns(DatasetWarning, match=r"skipped 2 of 5 records: 2 missing point file .*gone1") as rec:
        ds = PointLLMDataset(anno, layout["pts"], tok, num_point_tokens=NPT)
    assert len(rec) == 1
    assert ds.object_ids == ["a1", "b2", "c3"]
    assert ds.stats["missing_point_file"] == 2 and ds.stats["kept"] == 3 and ds.stats["records"] == 5
    assert [oid for _, oid, _ in ds.skipped["missing_point_file"]] == ["gone1", "gone2"]
    with pytest.raises(DatasetError, match=r"more\.json record 3 \(object gone1\): point file .*gone1_8192\.npy not found"):
        PointLLMDataset(anno, layout["pts"], tok, num_point_tokens=NPT, skip_invalid=False)


def test_unencodable_samples_are_skipped_and_counted(layout, tok):
    long_prefix = {"object_id": "a1", "conversations": [
        {"from": "human", "value": "word " * 60 + "<point>\nWhat is it?"}, {"from": "gpt", "value": "A box."}]}
    bad_roles = {"object_id": "b2", "conversations": [
        {"from": "human", "value": "<point>\nHi"}, {"from": "human", "value": "Again"}]}
    no_answer = {"object_id": "c3", "conversations": [{"from": "human", "value": "<point>\nWhat is it?"}]}
    anno = write_json(layout["dir"] / "odd.json", [brief("a1"), long_prefix, bad_roles, no_answer])
    with pytest.warns(DatasetWarning, match="3 cannot be encoded"):
        ds = PointLLMDataset(anno, layout["pts"], tok, num_point_tokens=NPT, max_length=100)
    assert ds.object_ids == ["a1"] and ds.stats["unencodable"] == 3
    assert [where.rsplit(" ", 1)[1] for where, _, _ in ds.skipped["unencodable"]] == ["1", "2", "3"]
    reasons = [why for _, _, why in ds.skipped["unencodable"]]
    assert "point block ends at token" in reasons[0] and "alternate" in reasons[1] and "no answer tokens" in reasons[2]
    # the kept sample is whole (it fits in 100 tokens) and still has its answer
    full = encode_conversation(tok, brief("a1")["conversations"], template="chat", num_point_tokens=NPT)
    assert len(full.input_ids) <= 100 and ds[0]["input_ids"].tolist() == full.input_ids
    # a budget that cuts b2's whole answer off (its question is longer) leaves nothing to learn: skipped too
    with pytest.warns(DatasetWarning, match="1 cannot be encoded"):
        tight = PointLLMDataset(write_json(layout["dir"] / "two.json", [brief("a1"), brief("b2", question="Please tell me. " * 10)]),
                                layout["pts"], tok, num_point_tokens=NPT, max_length=len(full.input_ids))
    assert tight.object_ids == ["a1"]


def test_lazy_encoding_gives_the_same_items_and_raises_for_unencodable(layout, tok):
    eager = PointLLMDataset([layout["brief"], layout["complex"]], layout["pts"], tok, num_point_tokens=NPT)
    lazy = PointLLMDataset([layout["brief"], layout["complex"]], layout["pts"], tok, num_point_tokens=NPT,
                           encode_upfront=False)
    for i in range(len(eager)):
        a, b = eager[i], lazy[i]
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["point_cloud"], b["point_cloud"])
    anno = write_json(layout["dir"] / "empty.json", [{"object_id": "a1", "conversations": [
        {"from": "human", "value": "<point>\nWhat is it?"}]}])
    lazy_bad = PointLLMDataset(anno, layout["pts"], tok, num_point_tokens=NPT, encode_upfront=False)
    with pytest.raises(DatasetError, match=r"empty\.json record 0 \(object a1\): no answer tokens"):
        lazy_bad[0]


def test_text_only_records_need_no_point_file(tmp_path, tok):
    (tmp_path / "p").mkdir()
    anno = write_json(tmp_path / "a.json", [{"object_id": "nofile", "conversation_type": "single_round",
                                             "conversations": [{"from": "human", "value": "Say hello."},
                                                               {"from": "gpt", "value": "Hello."}]}])
    ds = PointLLMDataset(anno, tmp_path / "p", tok, num_point_tokens=NPT)
    item = ds[0]
    assert item["point_cloud"] is None and not ds.has_points(0)
    assert tok.convert_tokens_to_ids("<point_start>") not in item["input_ids"].tolist()


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", r"bad\.json: not valid JSON \(line 1, column 2"),
        ('{"object_id": "a1"}', r"bad\.json: expected a JSON list of records, found a JSON dict"),
        ('["a1"]', r"bad\.json record 0: expected an object"),
        ('[{"conversations": []}]', r"bad\.json record 0: 'object_id' must be a non-empty string"),
        ('[{"object_id": "a1"}]', r"bad\.json record 0 \(object a1\): 'conversations' must be a non-empty list"),
        ('[{"object_id": "a1", "conversations": [{"from": "bot", "value": "x"}]}]', r"record 0 \(object a1\): turn 0 has 'from' 'bot'"),
        ('[{"object_id": "a1", "conversations": [{"from": "gpt"}]}]', r"record 0 \(object a1\): turn 0 needs a string 'value'"),
        ('[{"object_id": "a1", "conversation_type": 3, "conversations": [{"from": "gpt", "value": "x"}]}]',
         r"'conversation_type' must be a string"),
        ('[{"object_id": "../../etc/passwd", "conversations": [{"from": "gpt", "value": "x"}]}]', r"not a plain name"),
    ],
)
def test_schema_errors_name_the_file_and_record(tmp_path, tok, content, message):
    (tmp_path / "p").mkdir()
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(DatasetError, match=message) as err:
        PointLLMDataset(bad, tmp_path / "p", tok, num_point_tokens=NPT)
    assert isinstance(err.value, EnelError)
    with pytest.raises(DatasetError, match=message):
        read_annotations(bad)


def test_missing_annotation_file_and_point_folder(tmp_path, layout, tok):
    with pytest.raises(DatasetError, match=r"nope\.json: annotation file not found"):
        PointLLMDataset(tmp_path / "nope.json", layout["pts"], tok, num_point_tokens=NPT)
    with pytest.raises(DatasetError, match=r"nofolder: point folder not found"):
        PointLLMDataset(layout["brief"], tmp_path / "nofolder", tok, num_point_tokens=NPT)


def test_point_file_pattern_is_configurable(tmp_path, tok):
    flat, nested = tmp_path / "flat", tmp_path / "nested"
    a = write_cloud(flat, "x1", name="{object_id}.npy")
    write_cloud(nested, "x1", name="{object_id}/points.npy")
    anno = write_json(tmp_path / "a.json", [brief("x1")])
    ds = PointLLMDataset(anno, flat, tok, num_point_tokens=NPT, point_file_pattern="{object_id}.npy")
    np.testing.assert_allclose(ds[0]["point_cloud"].numpy()[:, :3], pc_norm(a[:, :3]), atol=1e-6)
    ds2 = PointLLMDataset(anno, nested, tok, num_point_tokens=NPT, point_file_pattern="{object_id}/points.npy")
    assert ds2[0]["point_cloud"].shape == (300, 6)
    with pytest.raises(DatasetError, match=r"must contain '\{object_id\}'"):
        PointLLMDataset(anno, flat, tok, num_point_tokens=NPT, point_file_pattern="points.npy")


def test_max_length_must_leave_room_for_the_point_block(layout, tok):
    with pytest.raises(DatasetError, match="no room"):
        PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, max_length=NPT + 2)


# ----------------------------------------------------------------------------------------------------------
# Benchmark ground truth and the evaluation helper
# ----------------------------------------------------------------------------------------------------------
def test_benchmark_gt_reads_the_first_answer(tmp_path):
    gt = write_json(tmp_path / "PointLLM_brief_description_val_200_GT.json",
                    [brief("u1", "A wooden chair."), brief("u2", "A toy car.", ctype=None)])
    assert load_benchmark_gt(gt) == [{"object_id": "u1", "ground_truth": "A wooden chair."},
                                     {"object_id": "u2", "ground_truth": "A toy car."}]
    one_turn = write_json(tmp_path / "short.json", [{"object_id": "u1", "conversations": [
        {"from": "human", "value": "<point>\nWhat?"}]}])
    with pytest.raises(DatasetError, match=r"short\.json record 0 \(object u1\): the ground truth is conversations\[1\]"):
        load_benchmark_gt(one_turn)
    dup = write_json(tmp_path / "dup.json", [brief("u1"), brief("u1")])
    with pytest.raises(DatasetError, match="object u1 appears in records 0 and 1"):
        load_benchmark_gt(dup)
    with pytest.raises(DatasetError, match="holds no records"):
        load_benchmark_gt(write_json(tmp_path / "empty.json", []))


def test_load_point_file_by_id_and_by_path_matches_the_dataset(layout, tok):
    ds = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, num_points=32,
                         resample_method="random", seed=3)
    by_id = load_point_file("b2", layout["pts"], 32, resample_method="random", seed=3)
    by_path = load_point_file(layout["pts"] / "b2_8192.npy")
    assert isinstance(by_id, np.ndarray) and np.array_equal(by_id, ds[1]["point_cloud"].numpy())
    assert by_path.shape == (300, 6) and by_path.dtype == np.float32
    with pytest.raises(DatasetError, match=r"zz_8192\.npy: point file not found"):
        load_point_file("zz", layout["pts"])


# ----------------------------------------------------------------------------------------------------------
# Packing several conversations of one object into one sample
# ----------------------------------------------------------------------------------------------------------
def _turns(rec):
    return [(t["from"], t["value"]) for t in rec["conversations"]]


def test_packing_joins_each_objects_conversations_with_one_point_block(layout, tok):
    files = [layout["brief"], layout["complex"]]
    plain = PointLLMDataset(files, layout["pts"], tok, num_point_tokens=NPT)
    packed = PointLLMDataset(files, layout["pts"], tok, num_point_tokens=NPT, pack_per_object=2, seed=3)
    assert len(plain) == 6 and len(packed) == 3 and packed.stats["kept"] == 3
    records = {r["object_id"]: [] for r in json.loads(layout["brief"].read_text())}
    for f in files:
        for r in json.loads(f.read_text()):
            records[r["object_id"]].append(r)
    start = tok.convert_tokens_to_ids("<point_start>")
    for i in range(len(packed)):
        item, oid = packed[i], packed.object_ids[i]
        assert packed.conversation_type(i) == "packed"
        assert int((item["input_ids"] == start).sum()) == 1  # one point block for both conversations
        # the encoding equals that of the two conversations joined by hand, in one of the two orders
        a, b = records[oid]
        joined = []
        for first, second in ((a, b), (b, a)):
            rest = [dict(t) for t in second["conversations"]]
            rest[0]["value"] = rest[0]["value"].replace("<point>\n", "")
            enc = encode_conversation(tok, first["conversations"] + rest, template="chat", num_point_tokens=NPT)
            joined.append(enc.input_ids)
        assert item["input_ids"].tolist() in joined
        # every answer of both conversations is supervised
        n_answer = sum(len(tok(t["value"], add_special_tokens=False).input_ids)
                       for r in (a, b) for t in r["conversations"] if t["from"] == "gpt")
        assert int((item["labels"] != IGNORE_INDEX).sum()) >= n_answer
        np.testing.assert_allclose(item["point_cloud"].numpy(), plain[plain.object_ids.index(oid)]["point_cloud"].numpy())


def test_pack_by_object_runs_order_text_only_records_and_determinism():
    def rec(oid, k, points=True):
        q = ("<point>\n" if points else "") + f"q{k}"
        return P.AnnotationRecord(oid, "single_round", [{"from": "human", "value": q}, {"from": "gpt", "value": f"a{k}"}],
                         points, 0, k)

    records = [rec("x", 0), rec("x", 1), rec("t", 2, points=False), rec("x", 2), rec("y", 3)]
    out = P.pack_by_object(records, 2, seed=0)
    assert out == P.pack_by_object(records, 2, seed=0)  # seeded
    assert [r.object_id for r in out] == ["t", "x", "x", "y"]  # text-only first, then objects in order
    assert out[0] is records[2] and out[3] is records[4]  # runs of one and text-only records pass unchanged
    x_runs = [r for r in out if r.object_id == "x"]
    assert sorted(len(r.convs) for r in x_runs) == [2, 4]  # 3 conversations → a run of 2 and a run of 1
    pair = next(r for r in x_runs if len(r.convs) == 4)
    assert pair.ctype == "packed"
    humans = [t["value"] for t in pair.convs if t["from"] == "human"]
    assert humans[0].startswith("<point>\n") and "<point>" not in humans[1]
    asked = sorted(h.replace("<point>\n", "") for r in x_runs for h in (t["value"] for t in r.convs)
                   if h.replace("<point>\n", "").startswith("q"))
    assert asked == ["q0", "q1", "q2"]  # every question kept exactly once
    assert records[0].convs[0]["value"] == "<point>\nq0"  # input untouched
    orders = {tuple(t["value"] for t in r.convs if t["from"] == "gpt")
              for s in range(8) for r in P.pack_by_object(records, 3, seed=s) if r.object_id == "x"}
    assert len(orders) > 1  # the order within an object depends on the seed


def test_pack_per_object_must_be_a_positive_integer(layout, tok):
    for bad in (0, -2, 1.5, True):
        with pytest.raises(DatasetError, match="pack_per_object"):
            PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, pack_per_object=bad)


# ----------------------------------------------------------------------------------------------------------
# Heading augmentation
# ----------------------------------------------------------------------------------------------------------
def test_heading_augmentation_turns_each_item_about_z_and_keeps_colours(layout, tok):
    plain = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT)
    aug = PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, augment=True)
    ref = plain[1]["point_cloud"].numpy().astype(np.float64)
    torch.manual_seed(3)
    first = aug[1]["point_cloud"].numpy().astype(np.float64)
    torch.manual_seed(3)
    again = aug[1]["point_cloud"].numpy()
    np.testing.assert_array_equal(first.astype(np.float32), again)  # the draw follows torch's generator
    np.testing.assert_array_equal(first[:, 3:], ref[:, 3:])  # rgb untouched
    np.testing.assert_allclose(first[:, 2], ref[:, 2], atol=1e-6)  # upright: z untouched
    # one rotation about z maps every point: fit it (least squares) and check it is orthonormal and exact
    rot, *_ = np.linalg.lstsq(ref[:, :2], first[:, :2], rcond=None)
    np.testing.assert_allclose(rot.T @ rot, np.eye(2), atol=1e-5)
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(ref[:, :2] @ rot, first[:, :2], atol=1e-5)
    angles = set()
    for _ in range(8):
        c = aug[1]["point_cloud"].numpy()
        r, *_ = np.linalg.lstsq(ref[:, :2], c[:, :2].astype(np.float64), rcond=None)
        angles.add(round(float(np.degrees(np.arctan2(r[0, 1], r[0, 0]))), 3))
    assert len(angles) == 8  # a fresh heading for every item
    np.testing.assert_allclose(plain[1]["point_cloud"].numpy(), ref.astype(np.float32))  # off: the same cloud


def test_augmentation_settings_are_checked_with_messages_that_name_the_fix(layout, tok):
    with pytest.raises(DatasetError, match=r"unknown augmentation setting\(s\) \['roll'\]"):
        PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, augment={"roll": 3})
    with pytest.raises(DatasetError, match=r"yaw_degrees must be a number in \[0, 180\]"):
        PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, augment={"yaw_degrees": 270})
    with pytest.raises(DatasetError, match="scale must be"):
        PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, augment={"scale": [1.2, 0.8]})
    with pytest.raises(DatasetError, match="true, false or a mapping"):
        PointLLMDataset(layout["brief"], layout["pts"], tok, num_point_tokens=NPT, augment="yes")
    assert P.resolve_augment(None, P.HEADING_AUGMENT) is None and P.resolve_augment(False, P.HEADING_AUGMENT) is None
    assert P.resolve_augment({"yaw_degrees": 30}, P.HEADING_AUGMENT) == {**P.HEADING_AUGMENT, "yaw_degrees": 30}
