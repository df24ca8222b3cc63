"""Token-aware text chunking: pieces that fit an embedder's window, cut at paragraph and sentence ends.

Token counts come from the embedder's own tokenizer when one is given (a HuggingFace ``tokenizers.Tokenizer``,
a ``transformers`` tokenizer, or the path of a ``tokenizer.json`` or a model folder holding one); otherwise from a
regular-expression approximation (one token per word or punctuation mark), which undercounts sub-word
tokenizers on long or rare words.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mm_rag._optional import require
from mm_rag.errors import InvalidInputError

# 250 tokens plus the two special tokens fit all-MiniLM-L6-v2's 256-token window.
DEFAULT_MAX_TOKENS = 250

Spans = list[tuple[int, int]]  # (start, end) character offsets of each token
TokenizerLike = Any  # tokenizers.Tokenizer | transformers tokenizer | str | os.PathLike | None

_WORD = re.compile(r"\w+|[^\w\s]")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")
_SENTENCE_END = frozenset(".!?…。！？")
_CLOSERS = frozenset("\"')]}»”’")
_FULL_WIDTH_END = frozenset("。！？")
_untruncated: dict[int, tuple[Any, Any]] = {}  # id(tokenizer) → (tokenizer, copy without truncation/padding)
_untruncated_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a text: ``text == source[char_start:char_end]``, `tokens` long by the tokenizer used."""

    text: str
    char_start: int
    char_end: int
    tokens: int


def chunk_text(
    text: str,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap_tokens: int | None = None,
    tokenizer: TokenizerLike = None,
) -> list[Chunk]:
    """Split `text` into chunks of at most `max_tokens` tokens that overlap by up to `overlap_tokens`
    (default: an eighth of `max_tokens`).

    Each cut goes at the strongest boundary in the second half of the window — a paragraph break, then a line
    break, a sentence end, a space, and only for a run of text without spaces, between two tokens — latest
    first. The next chunk starts at the first word boundary among the last `overlap_tokens` tokens (inside a
    word only when none is there). Counts exclude special tokens (``[CLS]`` …), and each chunk is re-tokenised
    on its own to check it fits; a single token that alone re-tokenises into too many is cut by characters.
    Leading and trailing whitespace is not part of any chunk; a text with no tokens gives no chunks.

    Raises:
        InvalidInputError: `text` is not a string, `max_tokens` < 1, or `overlap_tokens` outside [0, max_tokens).
    """
    if overlap_tokens is None:
        overlap_tokens = max_tokens // 8 if isinstance(max_tokens, int) else 0
    return _chunk(text, max_tokens, overlap_tokens, token_counter(tokenizer))


def token_spans(text: str, tokenizer: TokenizerLike = None) -> Spans:
    """The (start, end) character offsets of each token of `text`, without special tokens or truncation."""
    return token_counter(tokenizer)(text)


def token_counter(tokenizer: TokenizerLike = None) -> Callable[[str], Spans]:
    """A function giving the token spans of a text with `tokenizer` (see the module docstring for the kinds).

    Build it once and reuse it for many texts: a tokenizer configured to truncate or pad is copied once
    without those settings, so long texts are measured in full.

    Raises:
        InvalidInputError: a tokenizer of an unknown kind, or a path without a ``tokenizer.json``.
    """
    if tokenizer is None:
        return _regex_spans
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = _load_tokenizer(str(tokenizer))
    backend = getattr(tokenizer, "backend_tokenizer", None)  # transformers "fast" tokenizers wrap one
    if backend is not None:
        tokenizer = backend
    if not all(hasattr(tokenizer, name) for name in ("encode", "truncation", "padding")):
        raise InvalidInputError(
            f"unsupported tokenizer {type(tokenizer).__name__}: pass a tokenizers.Tokenizer, a transformers fast "
            "tokenizer, or the path of a tokenizer.json"
        )
    plain = _without_truncation(tokenizer)

    def spans(text: str) -> Spans:
        return [offset for offset in plain.encode(text, add_special_tokens=False).offsets if offset[1] > offset[0]]

    return spans


def _chunk(text: str, max_tokens: int, overlap: int, spans_of: Callable[[str], Spans]) -> list[Chunk]:
    if not isinstance(text, str):
        raise InvalidInputError(f"chunk_text: expected a string, got {type(text).__name__}")
    if (
        not isinstance(max_tokens, int)
        or max_tokens < 1
        or not isinstance(overlap, int)
        or not 0 <= overlap < max_tokens
    ):
        raise InvalidInputError(
            f"chunk_text: need max_tokens >= 1 and 0 <= overlap_tokens < max_tokens, got {max_tokens}, {overlap}"
        )
    spans = spans_of(text)
    count = len(spans)
    chunks: list[Chunk] = []
    start = 0
    while start < count:
        end = count if start + max_tokens >= count else _best_break(text, spans, start, start + max_tokens)
        while True:  # a piece cut inside a word can re-tokenise into more tokens: shrink until it fits
            char_start, char_end = spans[start][0], spans[end - 1][1]
            piece = spans_of(text[char_start:char_end])
            if len(piece) <= max_tokens or end - start == 1:
                break
            end = max(start + 1, end - (len(piece) - max_tokens))
        if len(piece) > max_tokens:  # one token of the whole text is several on its own: cut it by characters
            char_end = char_start + piece[max_tokens - 1][1]
            spans[start] = (char_end, spans[start][1])  # the rest of it starts the next chunk
            piece_text = text[char_start:char_end]
            chunks.append(Chunk(piece_text, char_start, char_end, len(spans_of(piece_text))))
            continue
        chunks.append(Chunk(text[char_start:char_end], char_start, char_end, len(piece)))
        if end >= count:
            break
        start = _overlap_start(text, spans, start, end, overlap)
    return chunks


def _priority(text: str, spans: Spans, index: int) -> int:
    """How good a cut between token ``index - 1`` and token ``index`` is: 4 paragraph … 0 inside a word."""
    previous_end, next_start = spans[index - 1][1], spans[index][0]
    gap = text[previous_end:next_start]
    if "\n" in gap:
        return 4 if _PARAGRAPH_BREAK.search(gap) else 3
    last = text[previous_end - 1]
    if last in _CLOSERS and previous_end >= 2:
        last = text[previous_end - 2]
    if last in _SENTENCE_END and (gap or last in _FULL_WIDTH_END):
        return 2
    return 1 if gap else 0


def _best_break(text: str, spans: Spans, start: int, limit: int) -> int:
    """The token index to end a chunk at (exclusive), in the window's second half, strongest then latest."""
    best, best_priority = limit, -1
    for index in range(limit, start + max(1, (limit - start) // 2) - 1, -1):
        priority = _priority(text, spans, index)
        if priority > best_priority:
            best, best_priority = index, priority
            if priority == 4:
                break
    return best


def _overlap_start(text: str, spans: Spans, start: int, end: int, overlap: int) -> int:
    """Where the next chunk starts: the first word start among the last `overlap` tokens of this one (inside
    a word only when none starts there), or `end` without overlap."""
    first = max(start + 1, end - overlap)
    for index in range(first, end):
        if _priority(text, spans, index) >= 1:
            return index
    return first


def _regex_spans(text: str) -> Spans:
    return [match.span() for match in _WORD.finditer(text)]


@lru_cache(maxsize=8)
def _load_tokenizer(path: str) -> Any:
    tokenizers = require("tokenizers", "token-aware chunking")
    file = Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)
    try:
        content = file.read_text(encoding="utf-8")
        json.loads(content)  # tokenizers reports every problem as a bare Exception: catch the common ones first
    except OSError as error:
        raise InvalidInputError(f"cannot read tokenizer {file}: {error.strerror or error}") from error
    except ValueError as error:
        raise InvalidInputError(f"{file} is not a tokenizer.json: {error}") from error
    return tokenizers.Tokenizer.from_str(content)


def _without_truncation(tokenizer: Any) -> Any:
    if tokenizer.truncation is None and tokenizer.padding is None:
        return tokenizer
    with _untruncated_lock:
        cached = _untruncated.get(id(tokenizer))
        if cached is not None and cached[0] is tokenizer:
            return cached[1]
        tokenizers = require("tokenizers", "token-aware chunking")
        plain = tokenizers.Tokenizer.from_str(tokenizer.to_str())
        plain.no_truncation()
        plain.no_padding()
        if len(_untruncated) >= 8:
            _untruncated.pop(next(iter(_untruncated)))
        _untruncated[id(tokenizer)] = (tokenizer, plain)
        return plain
