"""WordNet 3.0 for NLTK's METEOR, built offline from Debian's ``wordnet-base`` package.

``nltk.download`` needs the internet. Debian ships the same Princeton WordNet 3.0 database in
``/usr/share/wordnet`` but not the ``lexnames`` file NLTK's reader wants, and NLTK 3.10 refuses symlinks
that leave its data path. :func:`ensure_wordnet` copies the database into ``<cache>/nltk_data`` and writes
``lexnames`` from the fixed WordNet 3.0 table below (``man 5 lexnames``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..paths import cache_dir

DEBIAN_WORDNET = Path("/usr/share/wordnet")

# (lexicographer file name, syntactic category: 1 noun, 2 verb, 3 adjective, 4 adverb), numbered 00..44
_LEXNAMES = [("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1)]
_LEXNAMES += [(f"noun.{n}", 1) for n in (
    "act animal artifact attribute body cognition communication event feeling food group location motive "
    "object person phenomenon plant possession process quantity relation shape state substance time").split()]
_LEXNAMES += [(f"verb.{n}", 2) for n in (
    "body change cognition communication competition consumption contact creation emotion motion perception "
    "possession social stative weather").split()]
_LEXNAMES += [("adj.ppl", 3)]

_FILES = ("data.", "index.", "cntlist.rev", "sentidx", "sents")


def nltk_data_dir() -> Path:
    return cache_dir() / "nltk_data"


def ensure_wordnet(source: Path = DEBIAN_WORDNET) -> Path | None:
    """Make WordNet importable by NLTK; returns the ``nltk_data`` folder, or ``None`` when unavailable.

    Idempotent and cheap after the first call. Adds the folder to ``nltk.data.path``.
    """
    import nltk

    target = nltk_data_dir() / "corpora" / "wordnet"
    if not (target / "lexnames").exists():
        if not source.is_dir():
            return None
        tmp = target.with_name("wordnet.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in source.iterdir():
            if f.is_file() and (f.name.startswith(_FILES) or f.name.endswith(".exc")):
                shutil.copyfile(f, tmp / f.name)
        (tmp / "lexnames").write_text(
            "".join(f"{i:02d}\t{name}\t{pos}\n" for i, (name, pos) in enumerate(_LEXNAMES))
        )
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    path = str(nltk_data_dir())
    if path not in nltk.data.path:
        nltk.data.path.insert(0, path)
    return nltk_data_dir()
