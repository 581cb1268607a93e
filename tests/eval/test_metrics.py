"""Offline metrics against hand-computed values, and LLM-free closed-set classification."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from enel.errors import ConfigError
from enel.eval import metrics as M
from enel.data.labels import MODELNET40_CLASSES
from enel.eval.results import ResultsFile, make_record, write_results

GT = "the cat sat on the mat"  # 6 tokens


@pytest.fixture(scope="module")
def sbert():
    """The bundled all-MiniLM-L6-v2, loaded once per process."""
    return M.load_sentence_encoder()


# ---------------------------------------------------------------------------------------------- BLEU
def test_bleu1_brevity_penalty_by_hand():
    # 3 of 3 unigrams match; hypothesis 3 tokens vs reference 6: BP = exp(1 - 6/3)
    assert M.bleu(GT, "the cat sat") == pytest.approx(100 * math.exp(-1))


def test_bleu1_clipped_counts_by_hand():
    # "the" counted at most twice (reference has 2), "cat" 1, "dog" 0 → p1 = 3/4; BP = exp(1 - 6/4)
    assert M.bleu(GT, "the the cat dog") == pytest.approx(100 * 0.75 * math.exp(-0.5))


def test_bleu1_no_overlap_is_zero_and_full_match_is_100():
    assert M.bleu(GT, "dog bird") == 0.0
    assert M.bleu(GT, GT) == pytest.approx(100.0)


def test_bleu2_smoothing_method1_by_hand():
    # p1 = 2/3 ("the", "cat"); bigrams "the dog", "dog cat" match nothing: method1 gives (0 + 0.1) / 2
    expected = math.exp(1 - 6 / 3) * math.sqrt((2 / 3) * (0.1 / 2))
    assert M.bleu(GT, "the dog cat", M.BLEU_WEIGHTS["bleu-2"]) == pytest.approx(100 * expected)
    # without a zero count, plain geometric mean: p2 = 1/2 ("the cat")
    expected = math.exp(-1) * math.sqrt((2 / 3) * (1 / 2))
    assert M.bleu(GT, "the cat ran", M.BLEU_WEIGHTS["bleu-2"]) == pytest.approx(100 * expected)


# ---------------------------------------------------------------------------------------------- ROUGE
def test_rouge_l_lcs_by_hand():
    # LCS("the cat sat on the mat", "the cat lay on the mat") = the cat on the mat = 5 → P = R = 5/6
    assert M.rouge_l(GT, "the cat lay on the mat") == pytest.approx(100 * 5 / 6)
    # LCS = 3 ("cat on mat"): P = 3/3, R = 3/6, F = 2PR/(P+R) = 2/3
    assert M.rouge_l(GT, "cat on mat") == pytest.approx(100 * 2 / 3)
    # rouge-score lower-cases and drops punctuation
    assert M.rouge_l("The Cat.", "the cat") == pytest.approx(100.0)
    assert M.rouge_l(GT, "##") == 0.0


# ---------------------------------------------------------------------------------------------- METEOR
def test_meteor_exact_and_no_match():
    ok, reason = M.meteor_status()
    assert ok, reason
    # exact match: P = R = 1, one chunk of 6 matches → penalty 0.5 * (1/6)^3
    assert M.meteor(GT, GT) == pytest.approx(100 * (1 - 0.5 * (1 / 6) ** 3))
    assert M.meteor(GT, "dog bird") == 0.0


def test_meteor_reported_not_computed_without_wordnet(monkeypatch, sbert):
    monkeypatch.setattr(M._wordnet, "ensure_wordnet", lambda *a, **k: None)
    ok, reason = M.meteor_status()
    assert not ok and "wordnet-base" in reason
    doc = M.compute_metrics([make_record("a", GT, "the cat")], sbert=sbert)
    assert "meteor" not in doc["overall_scores"] and "WordNet" in doc["not_computed"]["meteor"]


# ---------------------------------------------------------------------------------------------- SBERT / SimCSE
def test_sbert_identical_paraphrase_unrelated(sbert):
    same, para, unrelated = M.pair_cosines(
        sbert, ["A red wooden chair."] * 3,
        ["A red wooden chair.", "A crimson chair made of wood.", "Stock markets fell sharply on Monday."])
    assert same == pytest.approx(100.0, abs=1e-3)
    assert para > unrelated + 20


def test_simcse_uses_pooler_output_of_a_local_model(tmp_path):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "chair", "blue", "table"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, max_position_embeddings=32))
    BertTokenizer(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "simcse")
    model.save_pretrained(tmp_path / "simcse")

    enc = M.SimCSEEncoder(tmp_path / "simcse")
    got = M.pair_cosines(enc, ["a red chair", "a red chair"], ["a red chair", "blue table"])
    tok = enc.tokenizer(["a red chair", "blue table"], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = enc.model(**tok).pooler_output
    expected = torch.nn.functional.cosine_similarity(pooled[0:1], pooled[1:2]).item() * 100
    assert got[0] == pytest.approx(100.0, abs=1e-3)
    assert got[1] == pytest.approx(expected, abs=1e-3)

    doc = M.compute_metrics([make_record("a", "a red chair", "blue table")], sbert=False, simcse=enc,
                            meteor_enabled=False)
    assert float(doc["overall_scores"]["simcse_similarity"]) == pytest.approx(expected, abs=1e-3)


def test_encoder_paths_must_be_local_folders(tmp_path):
    with pytest.raises(ConfigError, match="--sbert .*not a folder"):
        M.SentenceEncoder(tmp_path / "missing")
    with pytest.raises(ConfigError, match="--simcse .*not a folder"):
        M.SimCSEEncoder(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- compute_metrics
def test_compute_metrics_document(sbert, tmp_path):
    rf = ResultsFile(prompt="Caption this 3D model in detail.", results=[
        make_record("a", GT, "the cat sat"),
        make_record("b", "A red chair", ""),  # empty → "##" → every n-gram score 0
    ])
    doc = M.compute_metrics(rf, sbert=sbert)
    assert doc["inference_prompt"] == rf.prompt
    assert doc["results"][1]["model_output"] == "##"
    empty = doc["results"][1]["scores"]
    assert all(empty[m] == 0.0 for m in ("bleu-1", "bleu-4", "rouge-l", "meteor"))
    assert doc["results"][0]["scores"]["bleu-1"] == pytest.approx(100 * math.exp(-1))
    for metric, text in doc["overall_scores"].items():
        per = [r["scores"][metric] for r in doc["results"]]
        assert text == f"{np.mean(per):.4f}"  # PointLLM's 4-decimal strings
        assert doc["summary"][metric] == round(float(np.mean(per)), 4)
    assert set(doc["overall_scores"]) == {"bleu-1", "bleu-2", "bleu-3", "bleu-4", "rouge-1", "rouge-2", "rouge-l",
                                          "meteor", "sbert_similarity"}
    assert "SimCSE" in doc["not_computed"]["simcse_similarity"]
    out = M.write_metrics(doc, M.default_metrics_path(tmp_path / "x_prompt2.json"))
    assert out.name == "x_prompt2_evaluated_traditional.json"
    assert json.loads(out.read_text())["overall_scores"] == doc["overall_scores"]


def test_compute_metrics_rejects_empty_results():
    with pytest.raises(ConfigError, match="no records"):
        M.compute_metrics([], sbert=False)


# ---------------------------------------------------------------------------------------------- classification
def test_nearest_class_and_unmatched(sbert):
    answers = ["This is a chair.", "A 3D model of an airplane with two wings.", "I cannot tell what this is."]
    got = M.nearest_class(answers, sbert, threshold=0.4)
    names = [MODELNET40_CLASSES[m.index] if m.matched else None for m in got]
    assert names == ["chair", "airplane", None]
    assert got[2].cosine < 0.4 and got[2].best_index >= 0
    assert all(m.matched for m in M.nearest_class(answers, sbert, threshold=-1.0))


def test_exact_match_helpers():
    assert M.mentioned_classes("a table next to two chairs and a TV-stand") == [33, 8, 36]
    assert M.exact_match_class("It looks like a nightstand.") == MODELNET40_CLASSES.index("night stand")
    assert M.exact_match_class("A bedroom scene") == -1  # whole words only
    assert M.exact_match_class("Two glass boxes") == MODELNET40_CLASSES.index("glass box")
    assert M.label_in_answer("flower pot", "a Flower Pot with a plant")
    assert not M.label_in_answer("cup", "a cupboard")


# each row: ground truth, answer, then what each rule must say about it (worked out by hand from the rules in
# enel.data.labels and the cosines of the bundled all-MiniLM-L6-v2, each top class ahead of the next by > 0.1):
# nearest class by embedding (None: best cosine under 0.4), first class named (None: names none), and whether
# the ground truth is named anywhere
CLOSED_SET_ROWS = [
    ("chair", "This is a chair.", "chair", "chair", True),
    ("tv stand", "A TV-stand with shelves", "tv stand", "tv stand", True),  # not "tv" (monitor), not "shelves"
    ("airplane", "I cannot tell what this is.", None, None, False),  # unmatched by both rules
    ("table", "A desk, maybe a table", "desk", "desk", True),  # the first named class counts; the lenient rule ✓
    ("night stand", "a small nightstand by the bed", "bed", "night stand", True),  # embedding ✗, exact ✓
    ("bed", "A bedroom scene", "bed", None, False),  # embedding ✓; exact ✗: whole words only
    ("guitar", "This is a piano.", "piano", "piano", False),  # matched, and wrong by both rules
    ("table", "a chair or a table", "chair", "chair", True),  # naming two classes is not right by luck
    ("lamp", "a table lamp", "lamp", "lamp", True),  # the longer phrase wins: not "table"
    ("cup", "a mug", "cup", "cup", True),  # a synonym
    ("night stand", "a bedside table", "table", "night stand", True),  # "table" inside "bedside table" not counted
]


def test_classify_closed_set_marks_each_row_right_or_wrong(sbert):
    records = [make_record(i, MODELNET40_CLASSES.index(g), o, label_name=g)
               for i, (g, o, *_) in enumerate(CLOSED_SET_ROWS)]
    doc = M.classify_closed_set(records, encoder=sbert, threshold=0.4)
    assert [r["object_id"] for r in doc["results"]] == list(range(len(CLOSED_SET_ROWS)))
    for row, (gt, answer, nearest, first, mentioned) in zip(doc["results"], CLOSED_SET_ROWS):
        assert row["model_output"] == answer and row["label_name"] == gt
        assert row["nearest_class"] == (nearest or "UNMATCHED"), answer
        assert row["nearest_index"] == (MODELNET40_CLASSES.index(nearest) if nearest else -1), answer
        assert row["embedding_correct"] is (nearest == gt), answer
        assert row["exact_match_class"] == (first or "UNMATCHED"), answer
        assert row["exact_match_index"] == (MODELNET40_CLASSES.index(first) if first else -1), answer
        assert row["exact_match_correct"] is (first == gt), answer
        assert row["label_mentioned"] is mentioned, answer
    # the summary counts those rows: embedding right on rows 0, 1, 5, 8, 9 (5 of 11, 5 of the 10 matched);
    # exact right on 0, 1, 4, 8, 9, 10 (6 of 11, 6 of the 9 that name a class); ground truth named on 8 rows
    s = doc["summary"]
    assert s["total"] == 11
    assert s["embedding_unmatched"] == 1 and s["exact_match_unmatched"] == 2
    assert s["embedding_accuracy"] == pytest.approx(100 * 5 / 11, abs=1e-4)
    assert s["embedding_matched_accuracy"] == pytest.approx(100 * 5 / 10, abs=1e-4)
    assert s["exact_match_accuracy"] == pytest.approx(100 * 6 / 11, abs=1e-4)
    assert s["exact_match_matched_accuracy"] == pytest.approx(100 * 6 / 9, abs=1e-4)
    assert s["label_mentioned_rate"] == pytest.approx(100 * 8 / 11, abs=1e-4)
    assert doc["settings"]["threshold"] == 0.4 and doc["settings"]["template"] == "a {}"


def test_label_index_accepts_names_and_rejects_unknown():
    assert M.label_index({"object_id": 1, "ground_truth": "night_stand"}) == 23
    with pytest.raises(ConfigError, match="not one of the 40 class names"):
        M.label_index({"object_id": 1, "ground_truth": "spaceship"})


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_metrics_writes_pointllm_layout(tmp_path, capsys, monkeypatch, sbert):
    from enel.cli import eval as commands

    monkeypatch.setattr(M, "load_sentence_encoder", lambda path=None: sbert)  # reuse the loaded model
    cap = tmp_path / "caps.json"
    write_results(cap, ResultsFile(prompt="Caption this 3D model in detail.",
                                   results=[make_record("a", GT, "the cat sat on a mat")]))
    mn = tmp_path / "mn.json"
    write_results(mn, ResultsFile(prompt="What is this?", results=[make_record(0, 8, "a chair", label_name="chair")]))
    parser = argparse.ArgumentParser(prog="enel")
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "metrics", str(cap), str(mn), "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[str(mn)]["summary"]["embedding_accuracy"] == 100.0
    written = json.loads((tmp_path / "caps_evaluated_traditional.json").read_text())
    assert list(written)[:2] == ["inference_prompt", "overall_scores"]
    assert written["results"][0]["scores"]["bleu-1"] > 0
    with pytest.raises(ConfigError, match="not found"):
        args = parser.parse_args(["eval", "metrics", str(tmp_path / "missing.json")])
        args.func(args)
