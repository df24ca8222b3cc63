"""EPUB books, Jupyter notebooks and e-mail messages into passages and pictures; broken ones refused by name."""

from __future__ import annotations

import json
import re
from email.message import EmailMessage
from pathlib import Path

import pytest
from fixtures import officegen

from mm_rag.embed import packages
from mm_rag.embed.documents import Passage, read_document
from mm_rag.embed.media import MediaError
from mm_rag.embed.office import MIME_TYPES
from mm_rag.embed.packages import EMAIL_MIME, NOTEBOOK_MIME, email_attachment

EPUB, DOCX = MIME_TYPES["epub"], MIME_TYPES["docx"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("packages")
    report = officegen.write_docx(folder / "report.docx")
    return {
        "docx": report,
        "epub": officegen.write_epub(folder / "book.epub"),
        "notebook": officegen.write_notebook(folder / "analysis.ipynb"),
        "email": officegen.write_eml(folder / "message.eml", report.read_bytes()),
    }


def test_epub_one_passage_per_spine_document_with_its_pictures(files):
    document = read_document(files["epub"])
    assert document.mime_type == EPUB
    assert document.passages == [
        Passage("The Red Circle\n\nRed circles are round.\n\nFigure 1: the red circle", None, EPUB, "The Red Circle"),
        Passage("Squares have four sides.", None, EPUB, "Chapter Two"),  # no heading: the title names it
    ]
    assert [(p.locator, p.page, p.context) for p in document.pictures] == [
        ("OEBPS/images/red.png", None, "A red circle\nFigure 1: the red circle"),
        ("OEBPS/images/blue square.jpg", None, "A blue square"),  # ../images/blue%20square.jpg from text/
    ]  # the remote image is not fetched
    assert officegen.near(officegen.centre_colour(document.pictures[0].image), officegen.RED)
    assert officegen.near(officegen.centre_colour(document.pictures[1].image), officegen.BLUE)


def test_notebook_cells_outputs_and_image_outputs(files):
    document = read_document(files["notebook"])
    assert document.mime_type == NOTEBOOK_MIME
    assert document.passages == [
        Passage("# Analysis\nWe plot a red square.", None, NOTEBOOK_MIME, "markdown"),
        Passage("print('hello')\n\nOutput:\nhello", None, NOTEBOOK_MIME, "code"),  # stderr left out
        Passage("plot()", None, NOTEBOOK_MIME, "code"),  # "<Figure size…>" stands for the picture
        Passage("6 * 7\n\nOutput:\n42", None, NOTEBOOK_MIME, "code"),
    ]
    [picture] = document.pictures
    assert (picture.locator, picture.page, picture.context) == (
        "cell=3&output=1",
        None,
        "Analysis\nWe plot a red square.",
    )
    assert officegen.near(officegen.centre_colour(picture.image), officegen.RED)


def test_notebook_outputs_are_bounded_and_nbformat_3_is_read(tmp_path):
    long = {"cells": [{"cell_type": "code", "source": "loop()", "outputs": [
        {"output_type": "stream", "name": "stdout", "text": "x" * 10_000}]}], "nbformat": 4}  # fmt: skip
    path = tmp_path / "long.ipynb"
    path.write_text(json.dumps(long))
    [passage] = read_document(path).passages
    assert passage.text == "loop()\n\nOutput:\n" + "x" * packages.MAX_OUTPUT_CHARS + "… [output cut]"
    old = {"worksheets": [{"cells": [{"cell_type": "code", "input": ["1 + 1"], "outputs": [
        {"output_type": "pyout", "text": ["2"]}]}, {"cell_type": "markdown", "source": "Done."}]}], "nbformat": 3}  # fmt: skip
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(old))
    assert [p.text for p in read_document(path).passages] == ["1 + 1\n\nOutput:\n2", "Done."]


EMAIL_TEXT = (
    "From: Alice <alice@example.com>\nTo: Bob <bob@example.com>\nDate: Tue, 02 Jan 2024 10:00:00 +0000\n"
    "Subject: Fruit report\nAttachments: chart.png, report.docx, song.mp3\n\n"
    "Please find the report attached.\nThanks, Alice\n\nAttachment not read: song.mp3 (audio)"
)


def test_email_headers_body_and_attachments_routed_like_files(files):
    document = read_document(files["email"])
    report = read_document(files["docx"])
    assert document.mime_type == EMAIL_MIME
    assert document.passages[0] == Passage(EMAIL_TEXT, None, EMAIL_MIME, None)
    assert document.passages[1:] == [
        Passage(p.text, p.page, DOCX, "attachment: report.docx") for p in report.passages
    ]  # the attached Word document's passages, marked with the attachment
    assert [(p.locator, p.context) for p in document.pictures] == [
        ("attachment=1", "chart.png\nFruit report"),
        ("attachment=2/word/media/image1.png", "A red circle\nFigure 1: A red circle on white\nreport.docx"),
        ("attachment=2/word/media/image3.jpg", "A blue square\nBlue things\nreport.docx"),
    ]
    assert [p.image for p in document.pictures[1:]] == [p.image for p in report.pictures]
    assert officegen.near(officegen.centre_colour(document.pictures[0].image), officegen.RED)


def test_email_attachment_gives_the_bytes_back(files):
    assert email_attachment(files["email"], 1) == officegen.shape_image("circle", officegen.RED)
    assert email_attachment(files["email"], 2) == files["docx"].read_bytes()
    assert email_attachment(files["email"], 3) == officegen.MP3_BYTES
    with pytest.raises(MediaError, match=re.escape(f"{files['email']}: no attachment 4: the message has 3")):
        email_attachment(files["email"], 4)


def test_html_body_nested_message_and_unreadable_attachment(files, tmp_path):
    inner = EmailMessage()
    inner["From"], inner["Subject"] = "carol@example.com", "Original"
    inner.set_content("The forwarded words.")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "dave@example.com", "erin@example.com", "Fwd: Original"
    message.set_content("<html><body><p>See <b>below</b>.</p><script>x()</script></body></html>", subtype="html")
    message.add_attachment(inner)
    broken = officegen.truncated(files["docx"], tmp_path / "cut.docx").read_bytes()
    message.add_attachment(broken, maintype="application", subtype="octet-stream", filename="../../cut.docx")
    path = tmp_path / "forward.eml"
    path.write_bytes(message.as_bytes())
    document = read_document(path)
    assert document.passages[0].text.startswith("From: dave@example.com\n")
    assert "Attachments: attachment-1.eml, cut.docx\n\nSee below.\n\n" in document.passages[0].text
    assert document.passages[0].text.endswith(
        "\nAttachment not read: cut.docx (not a Word document: corrupt or truncated ZIP archive (File is not a zip file))"
    )  # the temporary copy's path is not in the message
    assert document.passages[1] == Passage(
        "From: carol@example.com\nSubject: Original\n\nThe forwarded words.", None, EMAIL_MIME,
        "attachment: attachment-1.eml",
    )  # fmt: skip


def test_messages_nested_too_deep_are_named_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(packages, "MAX_NESTING", 1)
    message: EmailMessage | None = None
    for depth in range(3):
        outer = EmailMessage()
        outer["From"], outer["Subject"] = "a@example.com", f"Level {depth}"
        outer.set_content(f"Body {depth}.")
        if message is not None:
            outer.add_attachment(message)
        message = outer
    path = tmp_path / "nested.eml"
    path.write_bytes(message.as_bytes())
    passages = read_document(path).passages
    assert [p.section for p in passages] == [None, "attachment: attachment-1.eml"]
    assert passages[1].text.endswith("Attachment not read: attachment-1.eml (nested more than 1 messages deep)")


@pytest.fixture(scope="module")
def broken(files, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Broken packages, notebooks and messages → the problem their message must name."""
    folder = tmp_path_factory.mktemp("broken_packages")
    epub, cut = files["epub"], officegen.truncated
    bad_opf = '<package xmlns="http://www.idpf.org/2007/opf"><manifest><item id="x" href="gone.xhtml"/></manifest><spine><itemref idref="x"/></spine></package>'
    drm = officegen.replaced_member(epub, folder / "drm.epub", "META-INF/encryption.xml", None)
    _add_member(drm, "META-INF/encryption.xml", (
        '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" xmlns:enc="http://www.w3.org/2001/04/xmlenc#">'
        '<enc:EncryptedData><enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>'
        '<enc:CipherData><enc:CipherReference URI="OEBPS/ch1.xhtml"/></enc:CipherData></enc:EncryptedData></encryption>'
    ))  # fmt: skip
    notebook = files["notebook"]
    not_notebook = folder / "data.ipynb"
    not_notebook.write_text('{"rows": [1, 2, 3]}')
    bad_cell = folder / "cells.ipynb"
    bad_cell.write_text('{"cells": ["not a cell"], "nbformat": 4}')
    no_headers = folder / "plain.eml"
    no_headers.write_text("Just some words, no headers at all.\n")
    return {
        "truncated_epub": (cut(epub, folder / "cut.epub"), "not an EPUB book: corrupt or truncated ZIP archive"),
        "zip_named_epub": (officegen.plain_zip(folder / "plain.epub"), "not an EPUB book: a ZIP archive without META-INF/container.xml"),
        "no_container_epub": (officegen.write_epub(folder / "nocontainer.epub", container=False), "without META-INF/container.xml"),
        "bad_opf_epub": (officegen.write_epub(folder / "opf.epub", opf="<package><manifest>"), "corrupt EPUB book: malformed XML in OEBPS/content.opf"),
        "missing_part_epub": (officegen.write_epub(folder / "missing.epub", opf=bad_opf), "corrupt EPUB book: missing part OEBPS/gone.xhtml"),
        "drm_epub": (drm, "encrypted EPUB book (DRM-protected)"),
        "bomb_epub": (officegen.zip_bomb(epub, folder / "bomb.epub", "OEBPS/ch1.xhtml"), "too large: OEBPS/ch1.xhtml would inflate"),
        "truncated_notebook": (cut(notebook, folder / "cut.ipynb"), "malformed notebook JSON"),
        "not_a_notebook": (not_notebook, "not a Jupyter notebook: no list of cells"),
        "bad_cell_notebook": (bad_cell, "malformed notebook: cell 1 is not a JSON object"),
        "binary_email": (officegen.random_file(folder / "binary.eml"), "not an e-mail message: binary data"),
        "headerless_email": (no_headers, "not an e-mail message: no From, To, Date or Subject header"),
        "truncated_email": (cut(files["email"], folder / "cut.eml", 0.6), "truncated e-mail: a MIME part has no closing boundary"),
    }  # fmt: skip


def _add_member(path: Path, member: str, text: str) -> None:
    import zipfile

    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(member, text)


@pytest.mark.parametrize(
    "name",
    ["truncated_epub", "zip_named_epub", "no_container_epub", "bad_opf_epub", "missing_part_epub", "drm_epub",
     "bomb_epub", "truncated_notebook", "not_a_notebook", "bad_cell_notebook", "binary_email", "headerless_email",
     "truncated_email"],
)  # fmt: skip
def test_broken_files_raise_media_error_naming_the_file_once(broken, name):
    path, problem = broken[name]
    with pytest.raises(MediaError) as raised:
        read_document(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and message.count(str(path)) == 1
    assert problem in message
