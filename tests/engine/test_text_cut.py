"""The character cut before tokenization never changes a result (engine/text_cut.py).

For each text, the ids from the cut path must equal those of the whole text tokenized
with truncation at the same length: ordinary prose, texts far over the bound, long
whitespace runs, no whitespace at all, characters the normalizer drops, CJK, words
WordPiece turns into one [UNK], and cuts that land in every position of a word.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from poolstream.config import default_model_path
from poolstream.engine.processor import load_tokenizer
from poolstream.engine.text_cut import TextCutter


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(Path(default_model_path()) / "tokenizer.json")


def _reference(tokenizer, text: str, limit: int) -> tuple[list[int], bool]:
    tok = tokenizer
    tok.enable_truncation(limit)
    try:
        enc = tok.encode(text)
    finally:
        tok.no_truncation()
    return enc.ids, bool(enc.overflowing)


def _words(rng: random.Random, n: int) -> str:
    vocab = ["the", "cat", "sat", "on", "a", "mat", "unconstitutional", "telecommunications", "é", "naïve",
             "x" * 150, "hello,world", "42", "3.14", "--", "\u4e2d\u6587", "emoji\U0001F600", "tab\there"]
    return " ".join(rng.choice(vocab) for _ in range(n))


def _texts(bound: int) -> list[tuple[str, str]]:
    rng = random.Random(7)
    return [
        ("short", "a short sentence"),
        ("prose far over the bound", _words(rng, 5000)),
        ("exactly at the bound", ("word " * bound)[:bound]),
        ("one past the bound", ("word " * bound)[: bound + 1]),
        ("whitespace run after a few words", "a b c " + " " * (bound * 3) + "d e f " * 300),
        ("only whitespace and one word at the end", " " * (bound * 5) + "end"),
        ("no whitespace, one long word", "a" * (bound * 4)),
        ("no whitespace, punctuation-split", "ab," * (bound * 2)),
        ("CJK without spaces", "\u4e2d\u6587\u5b57" * bound),
        ("dropped control characters", ("\x00\x01 w\u0301ord\x1c" * bound)),
        ("combining marks pile", "e" + "\u0301" * (bound * 3) + " tail " * 400),
        ("unit separators join words", ("ab\x1fcd " * bound)),
        ("newlines and CRs", ("line\r\n" * bound)),
        ("non-BMP", "\U0001F600 " * bound),
    ]


@pytest.mark.parametrize("limit", [None, 16, 128])
def test_cut_tokenizes_like_the_whole_text(tokenizer, limit):
    cutter = TextCutter(load_tokenizer(Path(default_model_path()) / "tokenizer.json"))
    limit = limit or 256
    bound = cutter.cut_chars(limit)
    for name, text in _texts(bound):
        ids = cutter.encode(text, limit)
        expected, truncated = _reference(tokenizer, text, limit)
        assert ids.ids == expected, name
        assert bool(ids.overflowing) == truncated, name


def test_cut_at_every_offset_of_a_word(tokenizer):
    """The bound falls at each position of words around it: same ids every time."""
    cutter = TextCutter(load_tokenizer(Path(default_model_path()) / "tokenizer.json"))
    limit = 8
    bound = cutter.cut_chars(limit)
    for shift in range(0, 40):
        text = "z" * shift + " " + "telecommunications unconstitutional " * (bound // 10)
        assert cutter.encode(text, limit).ids == _reference(tokenizer, text, limit)[0], shift


def test_first_pass_reads_a_bounded_prefix(tokenizer):
    """A text of a million characters is settled by the first pass from ~bound characters:
    the encoding's offsets never reach past the bound."""
    cutter = TextCutter(load_tokenizer(Path(default_model_path()) / "tokenizer.json"))
    text = _words(random.Random(1), 200_000)
    [enc] = cutter.first_pass([text], 256)
    assert enc is not None
    assert enc.ids == _reference(tokenizer, text, 256)[0]
    assert cutter.cut_chars(256) < 10_000  # 256 tokens x (longest token + 1) characters
