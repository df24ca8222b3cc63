"""Word, PowerPoint, Excel and CSV files into passages and pictures; OLE files and broken packages refused."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from fixtures import officegen
from PIL import Image

from mm_rag.embed import office, tables
from mm_rag.embed.documents import Passage, read_document
from mm_rag.embed.media import MediaError
from mm_rag.embed.office import MIME_TYPES, keep_picture
from mm_rag.embed.tables import table_lines

DOCX, PPTX, XLSX = MIME_TYPES["docx"], MIME_TYPES["pptx"], MIME_TYPES["xlsx"]
FRUIT_ROWS = [["Fruit", "Colour", "Price"], ["Apple", "red", "1.20"], ["Pear, Williams", "green", "0.80"]]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good office files by kind, written once for the module."""
    folder = tmp_path_factory.mktemp("office")
    return {
        "docx": officegen.write_docx(folder / "report.docx"),
        "pptx": officegen.write_pptx(folder / "deck.pptx"),
        "xlsx": officegen.write_xlsx(folder / "book.xlsx"),
        "csv": officegen.write_csv(folder / "fruit.csv", FRUIT_ROWS),
    }


def test_docx_passages_start_at_headings_with_tables_as_rows(files):
    document = read_document(files["docx"])
    assert document.mime_type == DOCX
    assert document.passages == [
        Passage("Report on fruit, written for the tests.", None, DOCX, None),
        Passage(
            "Apples\nApples are red or green.\nThey grow on trees.\n"
            "Fruit: Apple; Colour: red; Price: 1.20\nFruit: Pear; Colour: green; Price: 0.80",
            None, DOCX, "Apples",
        ),
        Passage("Pictures\nFigure 1: A red circle on white", None, DOCX, "Pictures"),
        Passage("Blue things\nThe end.", None, DOCX, "Blue things"),
    ]  # fmt: skip


def test_docx_pictures_carry_alt_text_caption_or_heading_and_leave_spacers_out(files):
    pictures = read_document(files["docx"]).pictures
    assert [(p.locator, p.page, p.context) for p in pictures] == [
        ("word/media/image1.png", None, "A red circle\nFigure 1: A red circle on white"),
        ("word/media/image3.jpg", None, "A blue square\nBlue things"),
    ]  # image2.png, the 1x1 spacer, is decoration
    with zipfile.ZipFile(files["docx"]) as archive:
        assert [archive.read(p.locator) for p in pictures] == [p.image for p in pictures]
        assert len(archive.read("word/media/image2.png")) < 100
    assert officegen.near(officegen.centre_colour(pictures[0].image), officegen.RED) and officegen.near(officegen.centre_colour(pictures[1].image), officegen.BLUE)
    assert Image.open(io.BytesIO(pictures[1].image)).format == "JPEG"


def test_pptx_one_passage_per_slide_with_tables_groups_and_notes(files):
    document = read_document(files["pptx"])
    assert document.mime_type == PPTX
    assert document.passages == [
        Passage("Fruit deck\nQuarterly review", 1, PPTX, "Fruit deck"),
        Passage("Apples\nRed apples\nGreen apples\nGrouped note\nNotes: Mention the orchard.", 2, PPTX, "Apples"),
        Passage("Prices\nFruit: Apple; Price: 1.20\nFruit: Pear; Price: 0.80", 3, PPTX, "Prices"),
    ]
    [picture] = document.pictures  # the spacer on slide 3 is left out
    assert (picture.locator, picture.page, picture.context) == ("ppt/media/image1.png", 3, "Prices\nA green triangle")
    with zipfile.ZipFile(files["pptx"]) as archive:
        assert archive.read(picture.locator) == picture.image
    assert officegen.near(officegen.centre_colour(picture.image), officegen.GREEN)


def test_xlsx_sheets_as_header_aware_rows(files):
    document = read_document(files["xlsx"])
    assert document.mime_type == XLSX and document.pictures == []
    assert document.passages == [
        Passage("Fruit: Apple; Colour: red; Price: 1.2\nFruit: Pear; Colour: green; Price: 0.8", None, XLSX, "Fruit"),
        Passage("Fruit: Apple; Count: 12; Updated: 2024-01-31\nFruit: Pear; Count: 3", None, XLSX, "Stock"),
    ]


def test_csv_dialects_encodings_and_headers(files, tmp_path):
    fruit = "Fruit: Apple; Colour: red; Price: 1.20\nFruit: Pear, Williams; Colour: green; Price: 0.80"
    assert read_document(files["csv"]).passages == [Passage(fruit, None, "text/csv", None)]
    european = officegen.write_csv(
        tmp_path / "prix.csv", [["Fruit", "Prix"], ["Crème brûlée", "3,50 €"], ["Œuf", "0,20 €"]], delimiter=";",
        encoding="cp1252",
    )  # fmt: skip
    assert read_document(european).passages[0].text == "Fruit: Crème brûlée; Prix: 3,50 €\nFruit: Œuf; Prix: 0,20 €"
    for encoding in ("utf-16", "utf-8-sig"):
        unicode = officegen.write_csv(tmp_path / f"{encoding}.csv", FRUIT_ROWS, encoding=encoding)
        assert read_document(unicode).passages[0].text == fruit
    tabs = officegen.write_csv(tmp_path / "fruit.tsv", [["a,b", "c"], ["d", "e"]], delimiter="\t")
    assert read_document(tabs).passages == [Passage("a,b | c\nd | e", None, "text/tab-separated-values", None)]
    empty = tmp_path / "empty.csv"
    empty.touch()
    assert read_document(empty).passages == []


def test_csv_above_the_row_limit_is_cut_and_says_so(tmp_path):
    rows = [["Item", "Amount"]] + [[f"item {i}", str(i)] for i in range(tables.MAX_TABLE_ROWS + 50)]
    document = read_document(officegen.write_csv(tmp_path / "big.csv", rows))
    lines = [line for passage in document.passages for line in passage.text.split("\n")]
    assert len(document.passages) == tables.MAX_TABLE_ROWS // tables.ROWS_PER_PASSAGE
    assert lines[0] == "Item: item 0; Amount: 0"
    assert (
        lines[tables.MAX_TABLE_ROWS - 1]
        == f"Item: item {tables.MAX_TABLE_ROWS - 1}; Amount: {tables.MAX_TABLE_ROWS - 1}"
    )
    assert lines[-1].startswith(f"[Cut: only the first {tables.MAX_TABLE_ROWS} rows")
    assert len(lines) == tables.MAX_TABLE_ROWS + 1


def test_csv_lines_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "MAX_CSV_LINE_CHARS", 1000)
    path = tmp_path / "one_line.csv"
    path.write_text("a,b\n1,2\n" + "x" * 5000)
    with pytest.raises(MediaError, match=re.escape(f"{path}: malformed CSV: a line longer than 1000 characters")):
        read_document(path)


def test_xlsx_limit_counts_every_sheet_and_names_those_not_read(files, monkeypatch):
    monkeypatch.setattr(tables, "MAX_TABLE_ROWS", 1)
    passages = read_document(files["xlsx"]).passages
    assert [passage.section for passage in passages] == ["Fruit"]
    assert passages[0].text == (
        "Fruit: Apple; Colour: red; Price: 1.2\n"
        "[Cut: only the first 1 rows or 100000 cells of this file were read; sheets not read: Stock]"
    )


def test_table_lines_header_detection():
    assert table_lines([["Name", "Age"], ["Ann", "31"], ["Bob", ""]]) == ["Name: Ann; Age: 31", "Name: Bob"]
    assert table_lines([["Ann", "Paris"], ["Bob", "Rome"]]) == ["Ann | Paris", "Bob | Rome"]  # no number: no header
    assert table_lines([["2023", "2024"], ["1", "2"]]) == ["2023 | 2024", "1 | 2"]  # numbers are not labels
    assert table_lines([["Name", "City"], ["Ann", "Paris"]], header=True) == ["Name: Ann; City: Paris"]
    assert table_lines([["", "Q1"], ["Sales", "12"], [], ["Costs", "3", ""]]) == ["Sales; Q1: 12", "Costs; Q1: 3"]


def test_keep_picture_leaves_out_decoration_and_vector_data():
    assert keep_picture(officegen.shape_image("circle", officegen.RED))
    assert not keep_picture(officegen.spacer_image())
    assert not keep_picture(officegen.shape_image("square", officegen.RED, size=(200, 4)))  # a rule
    assert not keep_picture(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    assert not keep_picture(b"\x01\x00\x00\x00" + bytes(100))  # EMF and the like: nothing Pillow decodes


@pytest.fixture(scope="module")
def broken(files, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Broken office files → the problem their message must name."""
    folder = tmp_path_factory.mktemp("broken_office")
    cut = officegen.truncated
    return {
        "truncated_docx": (cut(files["docx"], folder / "cut.docx"), "not a Word document: corrupt or truncated ZIP"),
        "truncated_pptx": (cut(files["pptx"], folder / "cut.pptx"), "not a PowerPoint presentation: corrupt or truncated"),
        "truncated_xlsx": (cut(files["xlsx"], folder / "cut.xlsx"), "not an Excel workbook: corrupt or truncated ZIP"),
        "zip_named_docx": (officegen.plain_zip(folder / "plain.docx"), "not a Word document: a ZIP archive without word/document.xml"),
        "zip_named_xlsx": (officegen.plain_zip(folder / "plain.xlsx"), "not an Excel workbook: a ZIP archive without xl/workbook.xml"),
        "bad_xml_docx": (officegen.replaced_member(files["docx"], folder / "xml.docx", "word/document.xml", b"<w:document"),
                         "corrupt Word document"),
        "no_slides_pptx": (officegen.replaced_member(files["pptx"], folder / "parts.pptx", "ppt/slides/slide2.xml", None),
                           "corrupt PowerPoint presentation"),
        "bad_sheet_xlsx": (officegen.replaced_member(files["xlsx"], folder / "sheet.xlsx", "xl/worksheets/sheet1.xml",
                                                     b"<worksheet><sheetData><row"), "corrupt Excel workbook"),
        "macro_docm": (_macro_docm(files["docx"], folder / "macro.docm"),
                       "corrupt Word document: file 'macro.docm' is not a Word file"),
        "bomb_docx": (officegen.zip_bomb(files["docx"], folder / "bomb.docx", "word/document.xml"),
                      "too large: word/document.xml would inflate to 314572800 bytes"),
        "binary_csv": (officegen.random_file(folder / "binary.csv"), "binary data, not text"),
        "encrypted_docx": (officegen.ole_file(folder / "locked.docx", ["EncryptionInfo", "EncryptedPackage"]),
                           "encrypted Office document (a password is needed)"),
        "legacy_doc": (officegen.ole_file(folder / "old.doc", ["WordDocument", "1Table", "\x05SummaryInformation"]),
                       "legacy Word (.doc) format is not supported; save it as .docx"),
        "legacy_xls_named_docx": (officegen.ole_file(folder / "old.docx", ["Workbook"]),
                                  "legacy Excel (.xls) format is not supported; save it as .xlsx"),
        "other_ole": (officegen.ole_file(folder / "mail.doc", ["__properties_version1.0", "__substg1.0_0037001F"]),
                      "an OLE compound file that is not a Word, Excel or PowerPoint document"),
        "truncated_ole": (cut(officegen.ole_file(folder / "whole.ppt", ["PowerPoint Document"]), folder / "cut.ppt", 0.1),
                          "truncated OLE compound file"),
    }  # fmt: skip


def _macro_docm(source: Path, target: Path) -> Path:
    """A copy whose main part is typed as macro-enabled, which python-docx does not open."""
    with zipfile.ZipFile(source) as archive:
        types = archive.read("[Content_Types].xml")
    macro = types.replace(b"wordprocessingml.document.main+xml", b"ms-word.document.macroEnabled.main+xml")
    return officegen.replaced_member(source, target, "[Content_Types].xml", macro)


@pytest.mark.parametrize(
    "name",
    ["truncated_docx", "truncated_pptx", "truncated_xlsx", "zip_named_docx", "zip_named_xlsx", "bad_xml_docx",
     "no_slides_pptx", "bad_sheet_xlsx", "macro_docm", "bomb_docx", "binary_csv", "encrypted_docx", "legacy_doc",
     "legacy_xls_named_docx", "other_ole", "truncated_ole"],
)  # fmt: skip
def test_broken_files_raise_media_error_naming_the_file_once(broken, name):
    path, problem = broken[name]
    with pytest.raises(MediaError) as raised:
        read_document(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and message.count(str(path)) == 1
    assert problem in message


def test_a_package_read_as_another_format_names_the_real_one(files):
    with pytest.raises(MediaError, match=re.escape(f"{files['pptx']}: not a Word document: it is a PowerPoint")):
        office.read_docx(files["pptx"], str(files["pptx"]))


def test_renamed_packages_are_read_by_their_content(files, tmp_path):
    renamed = tmp_path / "slides.pdf"
    renamed.write_bytes(files["pptx"].read_bytes())
    assert [passage.page for passage in read_document(renamed).passages] == [1, 2, 3]
    workbook = tmp_path / "numbers.docx"
    workbook.write_bytes(files["xlsx"].read_bytes())
    assert read_document(workbook).passages[0].section == "Fruit"
