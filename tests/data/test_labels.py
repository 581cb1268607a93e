"""The one scoring rule: an answer counts for the first label it names."""

import pytest

from enel.data.labels import MODELNET40_CLASSES, LabelVocabulary, modelnet40_vocabulary
from enel.data.procedural.scoring import match_category, match_color
from enel.eval.metrics import exact_match_class, label_in_answer, mentioned_classes


def test_naming_several_classes_counts_only_the_first():
    vocab = modelnet40_vocabulary()
    assert not vocab.is_correct("a chair or a table", "table")
    assert vocab.is_correct("a chair or a table", "chair")
    assert vocab.mentions("a chair or a table", "table")  # the lenient rule, reported beside the strict one
    assert exact_match_class("It is a chair or a table.") == MODELNET40_CLASSES.index("chair")
    assert not match_category("a chair or a table", "table") and match_category("a table, not a chair", "table")
    assert not match_color("The seat is red or blue.", "blue") and match_color("The seat is red or blue.", "red")


@pytest.mark.parametrize("answer, label", [
    ("This is a nightstand.", "night stand"),
    ("a bedside table", "night stand"),  # not a table: the longer name at the same place wins
    ("This is a couch.", "sofa"),
    ("It is a TV.", "monitor"),
    ("a TV stand", "tv stand"),
    ("a table lamp", "lamp"),
    ("two flower-pots", "flower pot"),
    ("a wooden bookcase", "bookshelf"),
    ("This is an object of a range_hood.", "range hood"),
])
def test_synonyms_a_person_would_accept(answer, label):
    assert modelnet40_vocabulary().first(answer) == label


def test_whole_words_only():
    vocab = modelnet40_vocabulary()
    assert vocab.first("a cargo bedroom") is None  # "car" and "bed" inside other words
    assert vocab.named("a sofa next to a lamp and another sofa") == ["sofa", "lamp"]
    assert mentioned_classes("a sofa next to a lamp") == [MODELNET40_CLASSES.index("sofa"),
                                                          MODELNET40_CLASSES.index("lamp")]
    assert label_in_answer("lamp", "a sofa next to a lamp") and not label_in_answer("bed", "a bedroom")


def test_every_synonym_names_its_own_class_and_no_phrase_is_shared():
    vocab = modelnet40_vocabulary()
    for label, phrases in vocab.synonyms.items():
        for p in phrases:
            assert vocab.first(f"I think it is a {p}.") == label, (p, label)
    with pytest.raises(ValueError, match="names both"):
        LabelVocabulary({"a": ("x",), "b": ("X",)})
    with pytest.raises(ValueError, match="unknown ModelNet40 class"):
        vocab.is_correct("a chair", "dragon")
