"""Tables as text, and the readers of files that are nothing but tables (Excel workbooks, CSV and TSV).

Word and PowerPoint tables go through the same `table_lines` as spreadsheet rows, so a row reads the same
whichever format it came from. Spreadsheets and CSV get readers of their own because a sheet can be far larger
than anything else a document holds: rows are streamed, header-aware, under one budget per file
(`MAX_TABLE_ROWS` rows, `MAX_TABLE_CELLS` cells). The ZIP package check (`open_package`) that every OOXML reader
and EPUB runs before a library opens the archive lives here too: the workbook reader needs it and
`mm_rag.embed.office` imports this module, so keeping it here lets the imports go one way only.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import datetime
import io
import itertools
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mm_rag._optional import require
from mm_rag.embed.documents import Document, Passage, decode_text
from mm_rag.embed.media import MediaError
from mm_rag.embed.sniff import read_head, sniff, text_encoding

__all__ = [
    "MAX_CELL_CHARS", "MAX_CSV_LINE_CHARS", "MAX_MEMBER_BYTES", "MAX_PACKAGE_BYTES", "MAX_TABLE_CELLS",
    "MAX_TABLE_ROWS", "ROWS_PER_PASSAGE", "TABLE_MIME_TYPES", "open_package", "read_csv", "read_xlsx", "table_lines",
]  # fmt: skip

MAX_MEMBER_BYTES = 256 * 1024 * 1024  # a ZIP member declaring more is refused (zip bomb), never inflated
MAX_PACKAGE_BYTES = 1024 * 1024 * 1024  # ... and so is a package whose members declare more in all
MAX_MEMBERS = 20_000  # members in one package
MAX_TABLE_ROWS = 10_000  # rows read from one spreadsheet or CSV file (all sheets together); the rest is cut
MAX_TABLE_CELLS = 100_000  # cells read from one spreadsheet or CSV file
MAX_CELL_CHARS = 1_000  # a longer cell is cut (with "…")
ROWS_PER_PASSAGE = 100  # a sheet becomes passages of this many rows
_CSV_SAMPLE_BYTES = 64 * 1024  # read to tell a CSV file's encoding and dialect
MAX_CSV_LINE_CHARS = 1024 * 1024  # a longer line is no table row: the file is refused, not read into memory
TABLE_MIME_TYPES = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
}
# What each package kind is called in messages, and the member that makes a ZIP archive one.
_PACKAGES = {
    "docx": ("a Word document", "word/document.xml"), "pptx": ("a PowerPoint presentation", "ppt/presentation.xml"),
    "xlsx": ("an Excel workbook", "xl/workbook.xml"), "epub": ("an EPUB book", "META-INF/container.xml"),
}  # fmt: skip
# Errors a corrupt package raises from inside zipfile, lxml/ElementTree (SyntaxError) and the libraries' parsers.
_PACKAGE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, SyntaxError, NotImplementedError)
_NUMBER = re.compile(r"[-+(]?[$€£¥]?\s*\d[\d,.\s]*(?:%|\s*[$€£¥])?\)?|\d{4}-\d{2}-\d{2}(?:[ T][\d:.]+)?")
_HEADER_LOOKAHEAD = 20  # rows looked at to tell whether the first one is a header


def open_package(path: Path, name: str, kind: str) -> zipfile.ZipFile:
    """Open a ZIP package of `kind` (``"docx"``, ``"pptx"``, ``"xlsx"``, ``"epub"``) after checking it.

    Raises:
        MediaError: naming the file: not a ZIP archive (corrupt or truncated), without the member that makes
            it that format, too many members, or members declaring more than `MAX_MEMBER_BYTES` each or
            `MAX_PACKAGE_BYTES` in all (a zip bomb).
    """
    label, member = _PACKAGES[kind]
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise MediaError(f"{name}: not {label}: corrupt or truncated ZIP archive ({error})") from error
    except OSError as error:
        raise MediaError(f"{name}: cannot read: {error.strerror or error}") from error
    infos = archive.infolist()
    problem = None
    if member not in archive.NameToInfo:
        found = sniff(path)
        other = f"it is {_PACKAGES[found][0]}" if found in _PACKAGES and found != kind else ""
        problem = f"not {label}: {other or f'a ZIP archive without {member}'}"
    elif len(infos) > MAX_MEMBERS:
        problem = f"too large: {len(infos)} ZIP members (the limit is {MAX_MEMBERS})"
    elif (big := max(infos, key=lambda info: info.file_size)).file_size > MAX_MEMBER_BYTES:
        problem = f"too large: {big.filename} would inflate to {big.file_size} bytes (limit {MAX_MEMBER_BYTES})"
    elif (total := sum(info.file_size for info in infos)) > MAX_PACKAGE_BYTES:
        problem = f"too large: its members would inflate to {total} bytes (limit {MAX_PACKAGE_BYTES})"
    if problem is not None:
        archive.close()
        raise MediaError(f"{name}: {problem}")
    return archive


def table_lines(rows: Sequence[Sequence[str]], header: bool | None = None) -> list[str]:
    """Rows as lines of text: ``"Header: value; Header2: value"`` when the first row is a header (`header`, or
    when None: it has only labels while a row below has a number or date), else ``"cell | cell"``."""
    rows = [cells for cells in (_trimmed(row) for row in rows) if any(cells)]
    if header is None:
        header = _looks_like_header(rows)
    if not header or len(rows) < 2:
        return [" | ".join(cells) for cells in rows]
    labels = rows[0]
    return [_labelled(labels, cells) for cells in rows[1:]]


def read_xlsx(path: Path, name: str) -> Document:
    """An Excel workbook (values as last computed, not formulas): each sheet's rows as header-aware text, in
    passages of `ROWS_PER_PASSAGE` rows whose `section` is the sheet name; at most `MAX_TABLE_ROWS` rows and
    `MAX_TABLE_CELLS` cells are read from the file (streamed), the cut stated in the last passage."""
    openpyxl = require("openpyxl", "Excel workbooks")
    mime_type = TABLE_MIME_TYPES["xlsx"]
    open_package(path, name, "xlsx").close()
    errors = (openpyxl.utils.exceptions.InvalidFileException, TypeError, *_PACKAGE_ERRORS)
    budget = _Budget()
    passages: list[Passage] = []
    try:
        with open(path, "rb") as file:  # given a path, openpyxl would refuse any extension but its own
            workbook = openpyxl.load_workbook(file, read_only=True, data_only=True)
            for sheet in workbook.worksheets:
                if budget.spent:
                    budget.skipped.append(sheet.title)
                    continue
                sheet.reset_dimensions()  # a declared dimension may be wrong, or huge: read the cells there
                passages.extend(_table_passages(sheet.iter_rows(values_only=True), budget, mime_type, sheet.title))
            workbook.close()
    except errors as error:
        raise MediaError(f"{name}: corrupt Excel workbook: {_reason(error, path)}") from error
    except OSError as error:
        raise MediaError(f"{name}: cannot read: {error.strerror or error}") from error
    return Document(budget.noted(passages), [], mime_type)


def read_csv(path: Path, name: str) -> Document:
    """A CSV or TSV file (dialect sniffed, encoding per `decode_text`): rows as header-aware text, in passages
    of `ROWS_PER_PASSAGE` rows, streamed up to `MAX_TABLE_ROWS` rows and `MAX_TABLE_CELLS` cells."""
    tabs = path.suffix.lower() == ".tsv"
    mime_type = TABLE_MIME_TYPES["tsv" if tabs else "csv"]
    head = read_head(path, _CSV_SAMPLE_BYTES)
    if not head:
        return Document([], [], mime_type)
    encoding = text_encoding(head)
    if encoding is not None:
        sample = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=False)
    else:  # the sample ends at a line end: a character cut in half would make UTF-8 look like cp1252
        whole = head if len(head) < _CSV_SAMPLE_BYTES else head[: head.rfind(b"\n") + 1] or head
        sample = decode_text(whole, name)  # refuses binary data
        lenient = whole.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        encoding = "utf-8" if sample == lenient else "cp1252"
    dialect: Any = csv.excel_tab if tabs else csv.excel
    if not tabs:
        try:
            dialect = csv.Sniffer().sniff(sample[: sample.rfind("\n") + 1] or sample, delimiters=",;\t|")
        except csv.Error:
            pass  # one column, or no delimiter stands out: commas
    budget = _Budget()
    try:
        with open(path, "rb") as raw, io.TextIOWrapper(raw, encoding, errors="replace", newline="") as text:
            passages = _table_passages(csv.reader(_csv_lines(text, name), dialect), budget, mime_type, None)
    except csv.Error as error:
        raise MediaError(f"{name}: malformed CSV: {error}") from error
    except OSError as error:
        raise MediaError(f"{name}: cannot read: {error.strerror or error}") from error
    return Document(budget.noted(passages), [], mime_type)


@dataclasses.dataclass
class _Budget:
    """Rows and cells left to read from one file, and what was left out."""

    rows: int = dataclasses.field(default_factory=lambda: MAX_TABLE_ROWS)
    cells: int = dataclasses.field(default_factory=lambda: MAX_TABLE_CELLS)
    spent: bool = False
    skipped: list[str] = dataclasses.field(default_factory=list)  # sheets not read at all

    def take(self, cells: int) -> bool:
        self.spent = self.spent or self.rows < 1 or self.cells < cells
        self.rows, self.cells = self.rows - 1, self.cells - cells
        return not self.spent

    def noted(self, passages: list[Passage]) -> list[Passage]:
        """`passages` with the cut stated at the end of the last one, when the limits were reached."""
        if not self.spent or not passages:
            return passages
        note = f"[Cut: only the first {MAX_TABLE_ROWS} rows or {MAX_TABLE_CELLS} cells of this file were read"
        note += f"; sheets not read: {', '.join(self.skipped)}]" if self.skipped else "]"
        return [*passages[:-1], dataclasses.replace(passages[-1], text=f"{passages[-1].text}\n{note}")]


def _table_passages(
    rows: Iterable[Sequence[Any]], budget: _Budget, mime_type: str, section: str | None
) -> list[Passage]:
    """A sheet's rows as passages of `ROWS_PER_PASSAGE` lines, reading no more rows than `budget` allows."""
    iterator = iter(rows)
    ahead = [_trimmed([_cell(value) for value in row]) for row in itertools.islice(iterator, _HEADER_LOOKAHEAD)]
    ahead = [cells for cells in ahead if any(cells)]
    labels = ahead[0] if _looks_like_header(ahead) else None
    rest = (_trimmed([_cell(value) for value in row]) for row in iterator)
    passages: list[Passage] = []
    lines: list[str] = []
    for cells in itertools.chain(ahead[1:] if labels else ahead, rest):
        if not any(cells):
            continue
        if not budget.take(len(cells)):
            break
        lines.append(_labelled(labels, cells) if labels else " | ".join(cells))
        if len(lines) == ROWS_PER_PASSAGE:
            passages.append(Passage("\n".join(lines), None, mime_type, section))
            lines = []
    if lines:
        passages.append(Passage("\n".join(lines), None, mime_type, section))
    return passages


def _csv_lines(text: io.TextIOBase, name: str) -> Iterator[str]:
    """The lines of a CSV file, each read with a bound: csv.reader itself would read a line of any length."""
    while line := text.readline(MAX_CSV_LINE_CHARS + 1):
        if len(line) > MAX_CSV_LINE_CHARS:
            raise MediaError(f"{name}: malformed CSV: a line longer than {MAX_CSV_LINE_CHARS} characters")
        yield line


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, datetime.datetime) and value.time() == datetime.time():
        value = value.date()
    text = " ".join((value.isoformat() if isinstance(value, (datetime.date, datetime.time)) else str(value)).split())
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def _trimmed(cells: Sequence[str]) -> list[str]:
    cells = list(cells)
    while cells and not cells[-1]:
        cells.pop()
    return cells


def _looks_like_header(rows: Sequence[Sequence[str]]) -> bool:
    """Only labels in the first row, and a number or date under one of them in the rows below."""
    if len(rows) < 2 or not any(rows[0]) or any(_NUMBER.fullmatch(cell) for cell in rows[0] if cell):
        return False
    labelled = [column for column, label in enumerate(rows[0]) if label]
    return any(column < len(row) and _NUMBER.fullmatch(row[column]) for row in rows[1:] for column in labelled)


def _labelled(labels: Sequence[str], cells: Sequence[str]) -> str:
    pairs = (f"{labels[i]}: {cell}" if i < len(labels) and labels[i] else cell for i, cell in enumerate(cells) if cell)
    return "; ".join(pairs)


def _reason(error: BaseException, path: Path) -> str:
    """A library's message without the file's path (python-docx and python-pptx put it in): it is named once."""
    return str(error).replace(str(path), path.name)
