"""Content sniffing: every generated format is recognised from its bytes, whatever its extension."""

from __future__ import annotations

import codecs
import json
import os
import re
import struct

import pytest
from fixtures import officegen

from mm_rag.embed.media import MediaError
from mm_rag.embed.sniff import looks_like_text, sniff, text_encoding


def _mismatches(corpus):
    return {name: (item.kind, sniff(item.path)) for name, item in corpus.items() if sniff(item.path) != item.kind}


def test_every_generated_format_is_recognised(media_corpus):
    assert _mismatches(media_corpus) == {}  # name: (expected, sniffed)


def test_content_wins_over_a_missing_or_misleading_extension(media_corpus, renamed_corpus):
    assert len(renamed_corpus) == 2 * len(media_corpus)
    assert _mismatches(renamed_corpus) == {}


def test_inconclusive_bytes_fall_back_to_the_extension(bad_corpus):
    readable = {name: item for name, item in bad_corpus.items() if name != "unreadable"}
    assert _mismatches(readable) == {}
    assert sniff(bad_corpus["random.jpg"].path.with_name("random.jpg")) == "image"


def test_audio_only_mp4_is_told_from_video_by_probing(media_corpus):
    assert sniff(media_corpus["audio_only_mp4"].path) == "audio"  # brand "isom" says nothing
    assert sniff(media_corpus["video"].path) == "video"
    # Without a path to probe, an ISO media file with a generic brand is assumed to be video.
    assert sniff(media_corpus["audio_only_mp4"].path.read_bytes()[:64]) == "video"
    assert sniff(media_corpus["m4a"].path.read_bytes()[:64]) == "audio"


@pytest.mark.timeout(20)
def test_unreadable_and_special_paths_raise_media_error_naming_them(bad_corpus, tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)  # opening it for reading would block: sniff must refuse it first
    for path in (bad_corpus["unreadable"].path, tmp_path, fifo, tmp_path / "missing.txt"):
        with pytest.raises(MediaError, match=re.escape(str(path))):
            sniff(path)


def test_leading_bytes_can_be_sniffed_without_a_file():
    assert sniff(b"%PDF-1.7\n...") == "pdf"
    assert sniff(b"\x89PNG\r\n\x1a\n" + bytes(16)) == "image"
    assert sniff(b"\xff\xf1\x50\x80\x02\x1f\xfc") == "audio"  # ADTS (AAC)
    assert sniff(b"\xff\xfb\x90\x64" + bytes(16)) == "audio"  # MPEG-1 layer III frame header
    assert sniff(b"\xff\xd8\xff\xe0") == "image"
    assert sniff(b"OggS" + bytes(24) + b"\x80theora") == "video"
    assert sniff(b"RIFF\0\0\0\0AVI LIST") == "video"
    assert sniff(b"") is None
    assert sniff(bytes(range(256)) * 4) is None
    assert sniff(b"plain words") == "text"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"<!DOCTYPE html><html><body>x</body></html>", "html"),
        (b"\n  <html lang='en'><p>x</p></html>", "html"),
        (b"<div class='a'>fragment</div>", "html"),
        (codecs.BOM_UTF8 + b"<!doctype html>", "html"),
        ("<html><body>utf-16</body></html>".encode("utf-16"), "html"),
        (b"# Title\n\nSome <b>inline</b> markup in Markdown.", "text"),
        (b"<?xml version='1.0'?><catalog/>", "text"),
        (b"<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'/>", "image"),
        ("Grüße aus Köln".encode("cp1252"), "text"),
    ],
)
def test_html_and_text_heuristics(data, kind):
    assert sniff(data) == kind


def test_text_in_an_html_file_is_html(tmp_path):
    fragment = tmp_path / "fragment.html"
    fragment.write_text("Hello <b>world</b>")
    assert sniff(fragment) == "html"
    notes = tmp_path / "notes.md"
    notes.write_text("Hello <b>world</b>")
    assert sniff(notes) == "text"


def test_looks_like_text():
    assert looks_like_text("naïve café".encode())
    assert looks_like_text("naïve café".encode("cp1252"))
    assert looks_like_text("with BOM".encode("utf-16"))
    assert not looks_like_text(b"")
    assert not looks_like_text(b"text with a NUL\0 byte")
    assert not looks_like_text(bytes(range(1, 32)) * 10)


# --- Documents told apart by content: ZIP packages, OLE files, e-mail, notebooks, CSV; Unicode text ---


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    """One file of every document kind (by content, under its usual name) and broken ZIP packages."""
    folder = tmp_path_factory.mktemp("sniff_documents")
    docx = officegen.write_docx(folder / "report.docx")
    notebook = officegen.write_notebook(folder / "analysis.ipynb")
    return {
        "docx": docx,
        "pptx": officegen.write_pptx(folder / "deck.pptx"),
        "xlsx": officegen.write_xlsx(folder / "book.xlsx"),
        "epub": officegen.write_epub(folder / "book.epub"),
        "email": officegen.write_eml(folder / "message.eml", docx.read_bytes()),
        "notebook": notebook,
        "csv": officegen.write_csv(folder / "fruit.csv", [["a", "b"], ["1", "2"]]),
        "ole": officegen.ole_file(folder / "locked.docx", ["EncryptionInfo", "EncryptedPackage"]),
    }


def test_every_document_kind_is_recognised(documents):
    assert {kind: sniff(path) for kind, path in documents.items()} == {kind: kind for kind in documents}


@pytest.mark.parametrize("suffix", [".dat", ".pdf", ".zip", ".txt", ".mp3", ""])
def test_packages_ole_email_and_notebooks_are_known_by_content_under_any_name(documents, tmp_path, suffix):
    for kind in ("docx", "pptx", "xlsx", "epub", "ole", "email", "notebook"):
        renamed = tmp_path / f"{kind}{suffix}"
        renamed.write_bytes(documents[kind].read_bytes())
        assert (kind, sniff(renamed)) == (kind, kind)


def test_zip_heads_are_judged_by_their_local_headers(documents):
    for kind in ("docx", "pptx", "xlsx", "epub"):
        assert sniff(documents[kind].read_bytes()) == kind


def test_other_and_damaged_zip_archives(documents, tmp_path):
    assert sniff(officegen.plain_zip(tmp_path / "archive.zip")) is None  # a ZIP of no format mm-rag reads
    assert sniff(officegen.plain_zip(tmp_path / "photo.jpg")) is None  # a ZIP is no image, whatever its name
    assert sniff(officegen.plain_zip(tmp_path / "plain.docx")) == "docx"  # its reader says what is missing
    for kind in ("docx", "pptx", "xlsx", "epub"):
        assert sniff(officegen.truncated(documents[kind], tmp_path / f"cut.{kind}")) == kind
        assert sniff(officegen.truncated(documents[kind], tmp_path / f"cut_{kind}.zip")) is None
    empty = tmp_path / "empty.xlsx"
    empty.write_bytes(b"PK\x05\x06" + bytes(18))
    assert sniff(empty) == "xlsx"


def test_ole_compound_files_and_legacy_extensions(tmp_path):
    assert sniff(officegen.ole_file(tmp_path / "old.bin", ["WordDocument"])) == "ole"
    assert sniff(officegen.random_file(tmp_path / "old.doc")) == "ole"  # inconclusive bytes: the name decides


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("From: Alice <a@example.com>\nTo: b@example.com\nSubject: Hi\n\nHello", "email"),
        ("Received: from mx.example.com\n\tby host; Tue, 2 Jan 2024\nMIME-Version: 1.0\n\nbody", "email"),
        ("From alice@example.com Tue Jan  2 10:00:00 2024\nFrom: a@example.com\nSubject: mbox\n\nx", "email"),
        ("Subject: Hi\n\nOnly one header line.", "text"),
        ("Title: Notes\nAuthor: Me\n\nMultiMarkdown metadata, not e-mail headers.", "text"),
        ("From: a@example.com\nthis line is no header\n\nbody", "text"),
        ('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', "notebook"),
        ('{"cells": [1, 2], "rows": 3}', "text"),  # JSON, but no notebook
    ],
)
def test_email_and_notebook_text_by_content(text, kind, tmp_path):
    assert sniff(text.encode()) == kind
    named = tmp_path / "file.txt"
    named.write_text(text)
    assert sniff(named) == kind


def test_extension_refines_text_into_csv_notebook_and_email(tmp_path):
    for name, kind in (("data.csv", "csv"), ("data.tsv", "csv"), ("x.ipynb", "notebook"), ("x.eml", "email")):
        path = tmp_path / name
        path.write_text("a\tb\n1\t2\n")
        assert sniff(path) == kind
    html = tmp_path / "page.csv"
    html.write_text("<!doctype html><html><body>a table</body></html>")
    assert sniff(html) == "html"  # content first


def test_notebook_with_its_version_after_a_long_head(tmp_path):
    cells = [{"cell_type": "code", "source": "x = 1\n" * 2000, "outputs": []}]
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1))
    assert sniff(path.read_bytes()) == "text"  # the head alone does not show the version key
    assert sniff(path) == "notebook"  # the file's end does
    path.write_text(json.dumps({"cells": cells, "nbformat": 4}), encoding="utf-16")
    assert sniff(path) == "notebook"


UNICODE = ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


@pytest.mark.parametrize("encoding", UNICODE)
@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Hello", "text"),  # "\xff\xfeH\x00" passed the MPEG frame-sync check: it was taken for MP3
        ("Notes about fruit, cafés and naïve ideas.\nSecond line.\n" * 40, "text"),
        ("<!doctype html><html><body><p>Grüße</p></body></html>", "html"),
        ("From: a@example.com\nSubject: Unicode mail\n\nbody", "email"),
        ('{"cells": [], "metadata": {}, "nbformat": 4}', "notebook"),
    ],
)
def test_unicode_text_with_or_without_bom_is_never_audio(encoding, text, kind, tmp_path):
    data = text.encode(encoding)
    assert sniff(data) == kind
    assert looks_like_text(data)
    path = tmp_path / "song.mp3"
    path.write_bytes(data)
    assert sniff(path) == kind


def test_unicode_csv_files_by_extension(tmp_path):
    for encoding in UNICODE:
        path = tmp_path / f"{encoding}.csv"
        path.write_text("Name,Amount\nApple,3\n", encoding=encoding)
        assert sniff(path) == "csv"


def test_text_encoding_and_binary_data_with_nul_bytes():
    assert text_encoding("plain".encode("utf-16")) == "utf-16"
    assert text_encoding("plain text".encode("utf-16-le")) == "utf-16-le"
    assert text_encoding("plain text".encode("utf-32-be")) == "utf-32-be"
    assert text_encoding(b"plain text") is None  # UTF-8 and 8-bit text are decode_text's to tell
    assert text_encoding(codecs.BOM_UTF8 + "Grüße".encode("cp1252")) is None  # a BOM, but not UTF-8 after it
    assert not looks_like_text(struct.pack("<64H", *range(64)))  # 16-bit integers: NULs, but control characters
    assert not looks_like_text(bytes(64))
    assert not looks_like_text(b"\xff\xfe" + bytes(range(256)) * 4)  # a BOM, then binary data
    assert sniff(b"\xff\xfb\x90\x64" + bytes(16)) == "audio"  # an MPEG frame is still audio
