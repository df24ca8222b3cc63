"""EPUB books, Jupyter notebooks and e-mail messages into passages and pictures.

EPUB is read with `zipfile` and the package document its ``META-INF/container.xml`` names (one passage per
spine document); notebooks are plain JSON (one passage per markdown or code cell, image outputs as pictures);
e-mail is parsed by the stdlib `email` package, and its attachments are routed like files: images become
pictures, documents are read by `read_document` from a temporary copy (their passages and pictures join the
message's, marked with the attachment), anything else is named in the message's text as not read.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextvars
import dataclasses
import email
import email.errors
import email.policy
import json
import mimetypes
import os
import posixpath
import re
import tempfile
import zipfile
import zlib
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree

from mm_rag._optional import MissingDependencyError, require
from mm_rag.embed.documents import READERS, Document, Passage, Picture, _html_text, read_document
from mm_rag.embed.media import MediaError, describe
from mm_rag.embed.office import MIME_TYPES, joined_context, keep_picture, open_package
from mm_rag.embed.sniff import SNIFF_BYTES, looks_like_text, read_head, sniff

__all__ = [
    "EMAIL_MIME", "MAX_ATTACHMENTS", "MAX_MESSAGE_BYTES", "MAX_NESTING", "MAX_OUTPUT_CHARS", "NOTEBOOK_MIME",
    "email_attachment", "read_email", "read_epub", "read_notebook",
]  # fmt: skip

MAX_MESSAGE_BYTES = 128 * 1024 * 1024  # notebooks and e-mail messages above this size are refused
MAX_OUTPUT_CHARS = 2_000  # text kept from one code cell's outputs
MAX_ATTACHMENTS = 100  # attachments read from one message; those after it are listed as not read
MAX_NESTING = 3  # how deep messages attached to messages (attached to messages…) are read
MAX_CONTEXT_CHARS = 300  # of a markdown cell, as the context of the pictures below it
NOTEBOOK_MIME = "application/x-ipynb+json"
EMAIL_MIME = "message/rfc822"
_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_OPF = "{http://www.idpf.org/2007/opf}"
_XMLENC = "{http://www.w3.org/2001/04/xmlenc#}"
# Font obfuscation (IDPF, Adobe) is listed in encryption.xml too, but it is not DRM: the text stays readable.
_FONT_OBFUSCATION = frozenset({"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"})
_HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]
_IMAGE_OUTPUTS = ("image/png", "image/jpeg", "png", "jpeg")  # nbformat 4 MIME types, nbformat 3 keys
_RESULTS = frozenset({"execute_result", "display_data", "pyout"})  # outputs with data (pyout: nbformat 3)
_HEADING_MARK = re.compile(r"^#+[ \t]*", re.MULTILINE)  # Markdown heading marks, left out of a picture's context
_HEADERS = ("From", "To", "Cc", "Date", "Subject")
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)
_MESSAGE_ERRORS = (email.errors.MessageError, LookupError, ValueError, IndexError, TypeError)
_DEFECTS = {
    email.errors.CloseBoundaryNotFoundDefect: "truncated e-mail: a MIME part has no closing boundary",
    email.errors.StartBoundaryNotFoundDefect: "malformed e-mail: a multipart message without its boundary",
}
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("mm_rag_attachment_depth", default=0)


def read_epub(path: Path, name: str) -> Document:
    """An EPUB book: a passage per spine document (its `section` the first heading, else its title) and the
    pictures its ``<img>`` elements show (locator: the ZIP member; context: alt text and figure caption)."""
    bs4 = require("bs4", "EPUB books")
    mime_type = MIME_TYPES["epub"]
    passages: list[Passage] = []
    pictures: list[Picture] = []
    with open_package(path, name, "epub") as archive:
        rootfile = _xml(archive, "META-INF/container.xml", name).find(f".//{_CONTAINER}rootfile")
        if rootfile is None or not rootfile.get("full-path"):
            raise MediaError(f"{name}: corrupt EPUB book: META-INF/container.xml names no package document")
        opf_path = rootfile.get("full-path", "")
        opf = _xml(archive, opf_path, name)
        base = posixpath.dirname(opf_path)
        manifest = {item.get("id"): _resolve(base, item.get("href", "")) for item in opf.iter(f"{_OPF}item")}
        encrypted = _encrypted(archive, name)
        shown: set[str] = set()
        for member in (manifest.get(ref.get("idref")) for ref in opf.iter(f"{_OPF}itemref")):
            if member is None:
                continue  # a spine entry for nothing in the manifest: nothing to read
            if member in encrypted:
                raise MediaError(f"{name}: encrypted EPUB book (DRM-protected): its text cannot be read")
            soup = bs4.BeautifulSoup(_member(archive, member, name), "html.parser")
            heading = soup.find(_HEADINGS) or soup.find("title")
            section = " ".join(heading.get_text().split()) if heading is not None else ""
            for image in soup.find_all(["img", "image"]):
                src = image.get("src") or image.get("xlink:href") or image.get("href") or ""
                target = _resolve(posixpath.dirname(member), str(src))
                figure = image.find_parent("figure")
                caption = figure.find("figcaption") if figure is not None else None
                context = joined_context(image.get("alt"), caption.get_text() if caption is not None else "")
                if target is not None and target not in shown and (data := _image_member(archive, target, name)):
                    shown.add(target)
                    pictures.append(Picture(data, target, None, context))
            if soup.head is not None:
                soup.head.decompose()  # the <title> is not part of the text
            # A UTF-8 BOM, for the text is UTF-8 now whatever encoding the XHTML declares.
            text = _html_text(codecs.BOM_UTF8 + str(soup).encode("utf-8"), f"{name}: {member}")
            if text:
                passages.append(Passage(text, None, mime_type, section or None))
    return Document(passages, pictures, mime_type)


def read_notebook(path: Path, name: str) -> Document:
    """A Jupyter notebook (nbformat 4, or 3): a passage per markdown or code cell (`section` ``"markdown"`` or
    ``"code"``), a code cell followed by its text outputs (stdout and plain-text results, at most
    `MAX_OUTPUT_CHARS`), and PNG/JPEG outputs as pictures (locator ``"cell=N&output=M"``, both 1-based;
    context: the markdown cell above)."""
    data = _read_limited(path, name)
    try:
        notebook = json.loads(data)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MediaError(f"{name}: malformed notebook JSON: {error}") from error
    cells = _cells(notebook)
    if cells is None:
        raise MediaError(f"{name}: not a Jupyter notebook: no list of cells")
    passages: list[Passage] = []
    pictures: list[Picture] = []
    context = ""
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict):
            raise MediaError(f"{name}: malformed notebook: cell {number} is not a JSON object")
        kind, text = cell.get("cell_type"), _joined(cell.get("source", cell.get("input"))).strip()
        if kind == "markdown":
            context = _HEADING_MARK.sub("", text)[:MAX_CONTEXT_CHARS]
        elif kind == "code":
            outputs = cell.get("outputs") if isinstance(cell.get("outputs"), list) else []
            shown = []
            for index, output in enumerate(outputs, start=1):
                if isinstance(output, dict):
                    shown.append(_output_text(output))
                    for image in _output_images(output):
                        pictures.append(Picture(image, f"cell={number}&output={index}", None, context))
            printed = "\n".join(filter(None, shown)).strip()
            if len(printed) > MAX_OUTPUT_CHARS:
                printed = printed[:MAX_OUTPUT_CHARS] + "… [output cut]"
            text = f"{text}\n\nOutput:\n{printed}" if printed else text
        else:
            continue  # raw cells: not meant as text of the notebook
        if text:
            passages.append(Passage(text, None, NOTEBOOK_MIME, kind))
    return Document(passages, pictures, NOTEBOOK_MIME)


def read_email(path: Path, name: str) -> Document:
    """An e-mail message (RFC 822/MIME): a passage with its From, To, Cc, Date and Subject, the names of its
    attachments and its body (plain text, else the HTML's text); then its attachments, routed like files.

    Attachment N (1-based, in MIME order) that is an image becomes a `Picture` with locator ``"attachment=N"``
    (context: file name and subject). One that `read_document` reads is read from a temporary copy: its
    passages follow with `section` ``"attachment: <name>"``, its pictures get the locator
    ``"attachment=N/<inner locator>"``. Audio, video, unknown data, unreadable documents, attachments past
    `MAX_ATTACHMENTS` and messages nested deeper than `MAX_NESTING` are named in the message's passage:
    ``"Attachment not read: <name> (<why>)"``. `email_attachment` gives an attachment's bytes back.

    Raises:
        MediaError: naming the file: too large, binary data, no header of a message, a truncated or
            malformed MIME structure.
    """
    message = _message(path, name)
    body = message.get_body(preferencelist=("plain", "html"))
    lines = [f"{field}: {value}" for field in _HEADERS if (value := _header(message, field))]
    if not any(line.startswith(("From:", "To:", "Date:", "Subject:")) for line in lines):
        raise MediaError(f"{name}: not an e-mail message: no From, To, Date or Subject header")
    attachments = _attachments(message, body)
    names = [_file_name(part, number) for number, part in enumerate(attachments, start=1)]
    if names:
        lines.append(f"Attachments: {', '.join(names)}")
    passages: list[Passage] = []
    pictures: list[Picture] = []
    skipped = []
    for number, (part, file_name) in enumerate(zip(attachments, names), start=1):
        if number > MAX_ATTACHMENTS:
            why: str | None = f"more than {MAX_ATTACHMENTS} attachments"
        else:
            why = _route(part, number, file_name, _header(message, "Subject"), passages, pictures)
        if why is not None:
            skipped.append(f"Attachment not read: {file_name} ({why})")
    text = "\n\n".join(filter(None, ["\n".join(lines), _body_text(body, name), "\n".join(skipped)]))
    return Document([Passage(text, None, EMAIL_MIME), *passages], pictures, EMAIL_MIME)


def email_attachment(path: str | os.PathLike[str], index: int) -> bytes:
    """The bytes of attachment `index` (1-based, numbered as `read_email` numbers them) of an e-mail message.

    Raises:
        MediaError: naming the file: unreadable as a message (see `read_email`) or no such attachment.
    """
    name = describe(path)
    message = _message(Path(path), name)
    attachments = _attachments(message, message.get_body(preferencelist=("plain", "html")))
    if not 1 <= index <= len(attachments):
        raise MediaError(f"{name}: no attachment {index}: the message has {len(attachments)}")
    data = _payload(attachments[index - 1])
    if data is None:
        raise MediaError(f"{name}: attachment {index} cannot be decoded")
    return data


def _xml(archive: zipfile.ZipFile, member: str, name: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(_member(archive, member, name))
    except ElementTree.ParseError as error:
        raise MediaError(f"{name}: corrupt EPUB book: malformed XML in {member} ({error})") from error


def _member(archive: zipfile.ZipFile, member: str, name: str) -> bytes:
    """A part the book cannot do without (`open_package` has bounded its size)."""
    try:
        return archive.read(member)
    except KeyError as error:
        raise MediaError(f"{name}: corrupt EPUB book: missing part {member}") from error
    except _ZIP_ERRORS as error:
        raise MediaError(f"{name}: corrupt EPUB book: cannot inflate {member} ({error})") from error


def _image_member(archive: zipfile.ZipFile, member: str, name: str) -> bytes | None:
    """A picture's bytes when it is there and worth keeping: a missing one is a broken link, not a broken book."""
    if member not in archive.NameToInfo:
        return None
    data = _member(archive, member, name)
    return data if keep_picture(data) else None


def _resolve(base: str, href: str) -> str | None:
    """The ZIP member a relative URL in a document in folder `base` points to; None for other URLs."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    target = posixpath.normpath(posixpath.join(base, unquote(parts.path)))
    return None if target == ".." or target.startswith(("../", "/")) else target


def _encrypted(archive: zipfile.ZipFile, name: str) -> set[str]:
    """Members encrypted for DRM, from META-INF/encryption.xml (obfuscated fonts do not count)."""
    if "META-INF/encryption.xml" not in archive.NameToInfo:
        return set()
    found: set[str] = set()
    for data in _xml(archive, "META-INF/encryption.xml", name).iter(f"{_XMLENC}EncryptedData"):
        method = data.find(f"{_XMLENC}EncryptionMethod")
        if method is None or method.get("Algorithm") not in _FONT_OBFUSCATION:
            found.update(
                filter(None, (_resolve("", ref.get("URI", "")) for ref in data.iter(f"{_XMLENC}CipherReference")))
            )
    return found


def _cells(notebook: Any) -> list[Any] | None:
    """The cells of nbformat 4 (``cells``) or of nbformat 3 (``worksheets[].cells``); None when not a notebook."""
    if not isinstance(notebook, dict):
        return None
    if isinstance(notebook.get("cells"), list):
        return notebook["cells"]
    sheets = notebook.get("worksheets")
    if not isinstance(sheets, list) or not all(isinstance(sheet, dict) for sheet in sheets):
        return None
    cells = [sheet.get("cells") for sheet in sheets]
    return [cell for group in cells for cell in group] if all(isinstance(group, list) for group in cells) else None


def _joined(value: Any) -> str:
    """Notebook text: a string, or a list of strings (lines)."""
    if isinstance(value, str):
        return value
    return "".join(item for item in value if isinstance(item, str)) if isinstance(value, list) else ""


def _output_text(output: dict[str, Any]) -> str:
    """What a reader sees of an output: stdout, or a plain-text result that does not stand for a picture."""
    kind = output.get("output_type")
    if kind == "stream":
        return "" if output.get("name", output.get("stream")) == "stderr" else _joined(output.get("text"))
    data = output.get("data") if isinstance(output.get("data"), dict) else output
    if kind not in _RESULTS or any(key in data for key in _IMAGE_OUTPUTS):
        return ""
    return _joined(data.get("text/plain", data.get("text")))


def _output_images(output: dict[str, Any]) -> list[bytes]:
    if output.get("output_type") not in _RESULTS:
        return []
    data = output.get("data") if isinstance(output.get("data"), dict) else output
    images = []
    for key in _IMAGE_OUTPUTS:
        if key in data:
            try:
                image = base64.b64decode(_joined(data[key]))
            except (binascii.Error, ValueError):
                continue  # a damaged output loses its picture, not the notebook its text
            if keep_picture(image):
                images.append(image)
    return images


def _read_limited(path: Path, name: str) -> bytes:
    data = read_head(path, MAX_MESSAGE_BYTES + 1)
    if len(data) > MAX_MESSAGE_BYTES:
        raise MediaError(f"{name}: too large: more than {MAX_MESSAGE_BYTES} bytes")
    return data


def _message(path: Path, name: str) -> EmailMessage:
    data = _read_limited(path, name)
    if not looks_like_text(data[:SNIFF_BYTES]):
        raise MediaError(f"{name}: not an e-mail message: binary data")
    message = email.message_from_bytes(data, policy=email.policy.default)
    for part in message.walk():
        for defect in part.defects:
            if type(defect) in _DEFECTS:
                raise MediaError(f"{name}: {_DEFECTS[type(defect)]}")
    return message  # type: ignore[return-value]  # policy.default makes EmailMessage objects


def _header(message: EmailMessage, field: str) -> str:
    try:
        value = message.get(field)
    except _MESSAGE_ERRORS:  # a header the parser chokes on: its raw text still says something
        value = next((raw for key, raw in message.raw_items() if key.lower() == field.lower()), None)
    return " ".join(str(value).split()) if value else ""


def _body_text(body: EmailMessage | None, name: str) -> str:
    if body is None:
        return ""
    try:
        content = body.get_content()
    except _MESSAGE_ERRORS as error:
        raise MediaError(f"{name}: malformed e-mail body: {error}") from error
    if body.get_content_subtype() == "html":
        return _html_text(codecs.BOM_UTF8 + content.encode("utf-8", errors="replace"), name)
    return content.replace("\r\n", "\n").strip()


def _attachments(message: EmailMessage, body: EmailMessage | None) -> list[EmailMessage]:
    """The leaves of the MIME tree that are not the body or its alternatives; attached messages whole."""
    found: list[EmailMessage] = []

    def visit(part: EmailMessage) -> None:
        if part is body:
            return
        if part.get_content_type() == "message/rfc822":
            found.append(part)
        elif part.is_multipart():
            for inner in part.iter_parts():
                visit(inner)  # type: ignore[arg-type]
        elif part.get_filename() or part.get_content_disposition() == "attachment":
            found.append(part)
        elif part.get_content_maintype() != "text":
            found.append(part)  # an inline image of an HTML body, say

    visit(message)
    return found


def _file_name(part: EmailMessage, number: int) -> str:
    try:
        given = part.get_filename()
    except _MESSAGE_ERRORS:
        given = None
    if given and Path(given).name:
        return Path(given).name  # never a path: the name is only shown
    kind = part.get_content_type()
    return f"attachment-{number}{'.eml' if kind == 'message/rfc822' else mimetypes.guess_extension(kind) or ''}"


def _payload(part: EmailMessage) -> bytes | None:
    try:
        if part.get_content_type() == "message/rfc822":
            return part.get_payload(0).as_bytes(policy=email.policy.default)  # type: ignore[union-attr]
        data = part.get_payload(decode=True)
    except _MESSAGE_ERRORS:
        return None
    return data if isinstance(data, bytes) else None


def _route(part: EmailMessage, number: int, file_name: str, subject: str, passages: list[Passage],
           pictures: list[Picture]) -> str | None:  # fmt: skip
    """Read one attachment into `passages` and `pictures`; the reason it was not read, or None."""
    data = _payload(part)
    if not data:
        return "empty or undecodable"
    if sniff(data) == "image":
        if keep_picture(data):
            pictures.append(Picture(data, f"attachment={number}", None, joined_context(file_name, subject)))
        return None
    if _depth.get() >= MAX_NESTING:
        return f"nested more than {MAX_NESTING} messages deep"
    with tempfile.TemporaryDirectory(prefix="mm-rag-attachment-") as folder:
        suffix = Path(file_name).suffix
        copy = Path(folder) / f"attachment{suffix if _SAFE_SUFFIX.fullmatch(suffix) else ''}"
        copy.write_bytes(data)
        kind = sniff(copy)
        if kind not in READERS:
            return kind or "unrecognised data"
        token = _depth.set(_depth.get() + 1)
        try:
            inner = read_document(copy)
        except MediaError as error:
            return str(error).removeprefix(f"{copy}: ")
        except MissingDependencyError as error:
            return str(error)
        finally:
            _depth.reset(token)
    section = f"attachment: {file_name}"
    passages.extend(dataclasses.replace(found, section=section) for found in inner.passages)
    for found in inner.pictures:
        context = joined_context(found.context, file_name)
        pictures.append(dataclasses.replace(found, locator=f"attachment={number}/{found.locator}", context=context))
    return None
