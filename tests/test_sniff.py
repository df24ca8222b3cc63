"""Content sniffing: every generated format is recognised from its bytes, whatever its extension."""

from __future__ import annotations

import codecs
import os
import re

import pytest

from mm_rag.embed.media import MediaError
from mm_rag.embed.sniff import looks_like_text, sniff


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
