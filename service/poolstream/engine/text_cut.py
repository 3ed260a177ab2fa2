"""Cutting texts by characters before tokenization, without changing any result.

Why: the tokenizer reads a whole text before truncating it to the model's
length. A 60 MiB text peaked at 7.9 GiB RSS and held the engine for 73 s, to
keep 256 tokens. So a text is tokenized from a prefix of at most
``cut_chars(limit)`` characters, where

    cut_chars(limit) = limit x (longest token in the vocabulary, in characters, + 1)

(+1 for the separator between words): a text whose first ``limit`` tokens lie
in that prefix is cut there. The cut must never change what the model sees, so
a cut result is kept only when it is provably the full text's:

- the prefix ends at a word boundary: just before a run of ASCII whitespace
  (space, tab, CR, LF), which every whitespace-splitting pre-tokenizer (BERT's,
  ``Whitespace``, ``Metaspace``, GPT-2's ``ByteLevel``) treats as the end of a
  word, so the prefix's tokens are a prefix of the text's tokens; and
- the prefix itself was truncated (it has more than ``limit`` tokens), so the
  ``limit`` tokens kept are the text's first ``limit`` tokens.

Otherwise (long whitespace runs, characters the normalizer drops, WordPiece's
single [UNK] for a word over 100 characters, no whitespace at all) the prefix
doubles and is tried again, up to the whole text, which admission has bounded
(``--max-prompt-chars``). Tokenizers whose pre-tokenizer does not split on
whitespace are never cut (only bounded).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tokenizers import Encoding, Tokenizer

# Where a word ends: a non-whitespace character followed by ASCII whitespace. Only ASCII
# whitespace: Python's \s also matches characters (U+001C..U+001F) that BERT's normalizer
# deletes, which would join the words on either side.
_WORD_END = re.compile(r"[^ \t\n\r][ \t\n\r]")
# How far back from the bound a word end is looked for.
_BOUNDARY_WINDOW = 512
_WHITESPACE_SPLITTERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "ByteLevel", "Metaspace"}
_DECORATIONS = ("##", "\u2581", "\u0120")  # WordPiece continuation, SentencePiece and GPT-2 space marks


def longest_token_chars(tokenizer: Tokenizer) -> int:
    """Characters of the vocabulary's longest token, decorations (##, the space marks) removed."""
    longest = 1
    for token in tokenizer.get_vocab(with_added_tokens=True):
        for mark in _DECORATIONS:
            if token.startswith(mark):
                token = token[len(mark):]
                break
        longest = max(longest, len(token))
    return longest


def splits_on_whitespace(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer's pre-tokenizer ends words at whitespace (so a cut there is exact)."""
    try:
        pre = json.loads(tokenizer.to_str()).get("pre_tokenizer")
    except (ValueError, TypeError):
        return False
    return _splits(pre)


def _splits(pre: Any) -> bool:
    if not isinstance(pre, dict):
        return False
    kind = pre.get("type")
    if kind == "Sequence":
        return any(_splits(p) for p in pre.get("pretokenizers") or ())
    if kind == "Metaspace":
        return bool(pre.get("split", True))
    if kind == "ByteLevel":
        return bool(pre.get("use_regex", True))
    return kind in _WHITESPACE_SPLITTERS


class TextCutter:
    """Tokenizes texts from bounded prefixes; see the module docstring.

    Not thread-safe: it sets the tokenizer's truncation. Each thread owns one."""

    def __init__(self, tokenizer: Tokenizer, chars_per_token: int | None = None, cut: bool | None = None):
        self.tokenizer = tokenizer
        self.chars_per_token = chars_per_token or longest_token_chars(tokenizer) + 1
        self.cut_enabled = splits_on_whitespace(tokenizer) if cut is None else cut
        self._truncation: int | None = None
        # encode_batch_fast (tokenizers >= 0.21) skips char offsets, which are never read.
        # A batch call also releases the GIL while the Rust side works.
        self._encode: Callable[[list[Any]], list[Encoding]] = getattr(
            tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    def cut_chars(self, limit: int) -> int:
        """The first prefix length tried for a truncation length of ``limit`` tokens."""
        return limit * self.chars_per_token

    def _truncate_at(self, limit: int) -> None:
        if self._truncation != limit:
            self.tokenizer.enable_truncation(limit)
            self._truncation = limit

    def first_pass(self, texts: list[str], limit: int) -> list[Encoding | None]:
        """One batch call on each text's first prefix: the encoding where it is exact, else None
        (``finish()`` then settles that text)."""
        self._truncate_at(limit)
        bound = self.cut_chars(limit)
        pieces: list[str] = []
        exact_if_short: list[bool] = []
        for text in texts:
            if len(text) <= bound:
                pieces.append(text)
                exact_if_short.append(True)
                continue
            end = self._word_end(text, bound) if self.cut_enabled else None
            pieces.append(text[:end] if end is not None else "")
            exact_if_short.append(False)
        out: list[Encoding | None] = []
        for enc, whole in zip(self._encode(pieces), exact_if_short):
            out.append(enc if whole or enc.overflowing else None)
        return out

    def finish(self, text: str, limit: int) -> Encoding:
        """The exact encoding of one text, doubling its prefix until it is provably exact."""
        self._truncate_at(limit)
        bound = self.cut_chars(limit) * 2
        while self.cut_enabled and bound < len(text):
            end = self._word_end(text, bound)
            if end is not None:
                [enc] = self._encode([text[:end]])
                if enc.overflowing:
                    return enc
            bound *= 2
        [enc] = self._encode([text])
        return enc

    @staticmethod
    def _word_end(text: str, bound: int) -> int | None:
        """The end of the last word that ends within ``_BOUNDARY_WINDOW`` characters before ``bound``."""
        start = max(0, bound - _BOUNDARY_WINDOW)
        last = None
        for m in _WORD_END.finditer(text, start, bound + 1):
            last = m
        return None if last is None else last.start() + 1

    def encode_whole(self, texts: list[Any], limit: int) -> list[Encoding]:
        """Texts (or (text, pair) tuples) tokenized whole, truncated at ``limit``."""
        if not texts:
            return []
        self._truncate_at(limit)
        return self._encode(texts)

    def encode(self, text: str, limit: int) -> Encoding:
        """One text, exactly (tests and one-off callers)."""
        [enc] = self.first_pass([text], limit)
        return enc if enc is not None else self.finish(text, limit)
