"""The general loaders of both integrations give exactly what `mm_rag.ingest` stores, for every kind of file.

One folder holds a file of each kind mm-rag reads. It is ingested with real models (MiniLM for text, the tiny
CLIP so that pictures and keyframes are stored, Whisper tiny.en for speech), then loaded with LangChain's
`MMRagLoader` and LlamaIndex's `MMRagReader`: every stored record must come back once, with its id, text and
metadata, plus only the keys each framework documents (LangChain: ``uri``, ``doc_id``, ``source`` and, for
media, ``modality``; LlamaIndex: ``modality``, ``doc_id`` and ``source``).
"""

from __future__ import annotations

import base64
import io
import logging
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from fixtures import mediagen, officegen, pdfgen
from fixtures.mediagen import Scene
from fixtures.ocrset import render_lines
from langchain_core.documents import Document as LangChainDocument
from langchain_mm_rag import MMRagLoader
from llama_index.core import SimpleDirectoryReader
from llama_index.core.schema import ImageDocument, MetadataMode
from llama_index.readers.mm_rag import MMRagReader
from PIL import Image

from mm_rag import InvalidInputError, MediaError, MultimodalStore, Record, TextEmbedder, WhisperTranscriber, ingest

SPOKEN = "The red scene comes first. Then the green scene follows."
# What each kind of file must give (so that a comparison can never pass on nothing): its record modalities.
KINDS: dict[str, tuple[str, set[str]]] = {
    "text": ("notes.txt", {"text"}),
    "markdown": ("readme.md", {"text"}),
    "html": ("page.html", {"text"}),
    "pdf": ("report.pdf", {"text", "image"}),
    "docx": ("fruit.docx", {"text", "image"}),
    "pptx": ("deck.pptx", {"text", "image"}),
    "xlsx": ("stock.xlsx", {"text"}),
    "csv": ("prices.csv", {"text"}),
    "epub": ("book.epub", {"text", "image"}),
    "ipynb": ("analysis.ipynb", {"text", "image"}),
    "eml": ("message.eml", {"text", "image"}),
    "image": ("photo.png", {"image"}),
    "audio": ("speech.wav", {"audio"}),
    "video": ("scenes.mp4", {"video"}),
}


def write_corpus(folder: Path) -> dict[str, Path]:
    """One file of every kind in `folder`; the documents' pictures are large enough not to count as decoration."""
    path = {kind: folder / name for kind, (name, _) in KINDS.items()}
    path["text"].write_text("Plain notes about oranges.\nThey are round and sweet.\n", encoding="utf-8")
    path["markdown"].write_text("# Notes\n\nPlums are *purple*.\n\n- cherries\n- grapes\n", encoding="utf-8")
    path["html"].write_text("<html><body><h1>Fruit</h1><p>Bananas are <b>yellow</b>.</p></body></html>")
    pdfgen.write_report(path["pdf"])
    import docx

    document = docx.Document(officegen.write_docx(path["docx"]))
    document.add_picture(io.BytesIO(officegen.shape_image("circle", officegen.GREEN, size=(160, 120))))
    document.add_paragraph("Figure 2: A green circle", style="Caption")
    document.save(path["docx"])
    officegen.write_pptx(path["pptx"])
    officegen.write_xlsx(path["xlsx"])
    officegen.write_csv(path["csv"], [["Fruit", "Price"], ["Apple", "1.20"], ["Pear", "0.80"]])
    officegen.write_epub(path["epub"])
    officegen.write_notebook(path["ipynb"])
    message = officegen.email_message(path["docx"].read_bytes())
    photo = officegen.shape_image("square", officegen.RED, size=(128, 96))
    message.add_attachment(photo, maintype="image", subtype="png", filename="photo.png")
    path["eml"].write_bytes(message.as_bytes())
    mediagen.write_image(path["image"], "PNG", size=(64, 48))
    mediagen.speech_wav(path["audio"], SPOKEN)
    scenes = (Scene(0.0, (200, 30, 30)), Scene(2.3, (30, 200, 60)))
    mediagen.write_video(path["video"], scenes, 4.5, audio=mediagen.read_wav(path["audio"]))
    return path


@pytest.fixture(scope="module")
def transcriber(whisper_ct2_dir: Path) -> WhisperTranscriber:
    return WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu", language="en")


@pytest.fixture(scope="module")
def text_embedder(minilm_dir: Path) -> TextEmbedder:
    return TextEmbedder(minilm_dir, device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("every-kind"))


def stored_records(folder: Path, clip: Any, text: Any, **settings: Any) -> dict[str, list[Record]]:
    """Ingest `folder` into a temporary store (nothing may fail or be skipped); its records by doc_id."""
    store = MultimodalStore()
    try:
        report = ingest(folder, store, clip=clip, text=text, **settings)
        assert not report.failed and not report.skipped, report.lines()
        by_doc: dict[str, list[Record]] = defaultdict(list)
        for record in store.find():
            by_doc[record.doc_id].append(record)
        return dict(by_doc)
    finally:
        store.close()


def by_doc_id(documents: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    for document in documents:
        grouped[document.metadata["doc_id"]].append(document)
    return dict(grouped)


@pytest.fixture(scope="module")
def stored(corpus, tiny_clip, text_embedder, transcriber) -> dict[str, list[Record]]:
    return stored_records(corpus["text"].parent, tiny_clip, text_embedder, transcriber=transcriber)


@pytest.fixture(scope="module")
def langchain_documents(corpus, transcriber) -> list[LangChainDocument]:
    return MMRagLoader(corpus["text"].parent, transcriber=transcriber).load()


@pytest.fixture(scope="module")
def llama_documents(corpus, transcriber) -> list[Any]:
    return MMRagReader(transcriber=transcriber).load_data(corpus["text"].parent)


# --- what each framework shows of a record ---------------------------------------------------------------------
def langchain_view(record: Record) -> tuple[str, dict[str, Any]]:
    """(page_content, metadata) of a record as a LangChain Document (`record_to_document` plus ``source``)."""
    metadata = {**record.metadata, "uri": record.uri, "doc_id": record.doc_id, "source": record.uri}
    if record.modality != "text":
        metadata["modality"] = record.modality
    return record.text or "", metadata


def llama_view(record: Record) -> tuple[str, dict[str, Any]]:
    """(text, metadata) of a record as a LlamaIndex document."""
    return record.text or "", {**record.metadata, "modality": record.modality, "doc_id": record.doc_id,
                               "source": record.uri}  # fmt: skip


def check_langchain(documents: list[LangChainDocument], records: list[Record]) -> None:
    assert len({d.id for d in documents}) == len(documents)
    assert {d.id: (d.page_content, d.metadata) for d in documents} == {r.id: langchain_view(r) for r in records}


def check_llama(documents: list[Any], records: list[Record]) -> None:
    assert len({d.id_ for d in documents}) == len(documents)
    assert {d.id_: (d.text, d.metadata) for d in documents} == {r.id: llama_view(r) for r in records}
    by_id = {r.id: r for r in records}
    for document in documents:
        record = by_id[document.id_]
        pictured = record.modality == "image" or (record.modality == "video" and "frame_time" in record.metadata)
        assert isinstance(document, ImageDocument) == pictured, record
        if record.modality == "image" and "picture" not in record.metadata:  # an image file: by path
            assert document.image_path == record.uri and document.image is None
            assert document.image_mimetype == record.metadata["mime_type"]
        elif pictured:  # a picture inside a document, or a keyframe: inline PNG
            assert document.image_mimetype == "image/png" and document.image_path is None
            picture = Image.open(io.BytesIO(base64.b64decode(document.image)))
            if record.modality == "image":
                assert picture.size == (record.metadata["width"], record.metadata["height"])
        embedded = document.get_content(MetadataMode.EMBED)
        assert "doc_id:" not in embedded and "source:" not in embedded  # bookkeeping stays out of the vector


# --- every kind -----------------------------------------------------------------------------------------------
@pytest.mark.slow  # real models
@pytest.mark.parametrize("kind", list(KINDS))
def test_langchain_loader_gives_the_stored_records(kind, corpus, stored, langchain_documents) -> None:
    doc_id = str(corpus[kind].absolute())
    records = stored[doc_id]
    assert {r.modality for r in records} == KINDS[kind][1]
    check_langchain(by_doc_id(langchain_documents)[doc_id], records)


@pytest.mark.slow  # real models
@pytest.mark.parametrize("kind", list(KINDS))
def test_llama_index_reader_gives_the_stored_records(kind, corpus, stored, llama_documents) -> None:
    doc_id = str(corpus[kind].absolute())
    records = stored[doc_id]
    assert {r.modality for r in records} == KINDS[kind][1]
    check_llama(by_doc_id(llama_documents)[doc_id], records)


@pytest.mark.slow  # real models
def test_kinds_are_covered_and_files_come_in_folder_order(corpus, stored, langchain_documents, llama_documents):
    assert set(stored) == {str(path.absolute()) for path in corpus.values()}
    in_order = sorted(str(path.absolute()) for path in corpus.values())
    for documents in (langchain_documents, llama_documents):
        assert list(dict.fromkeys(d.metadata["doc_id"] for d in documents)) == in_order
    video = stored[str(corpus["video"].absolute())]
    assert any(r.text for r in video) and any(not r.text for r in video)  # speech windows and keyframes
    pictures = [r for r in stored[str(corpus["pdf"].absolute())] if r.modality == "image"]
    assert any(r.metadata.get("caption") and r.metadata["page"] and r.metadata["picture"] for r in pictures)


@pytest.mark.slow  # real models
def test_text_inside_pictures_read_by_auto_ocr(tmp_path, tiny_clip, text_embedder) -> None:
    from mm_rag.embed.ocr import load_ocr

    render_lines(["Invoice 4711", "Total due 1200 EUR"], size=28).save(tmp_path / "scan.png")
    records = stored_records(tmp_path, tiny_clip, text_embedder, ocr=load_ocr())
    (record,) = records[str(tmp_path / "scan.png")]
    assert "4711" in record.text and record.metadata["ocr_engine"]
    check_langchain(MMRagLoader(tmp_path, ocr="auto").load(), [record])
    check_llama(MMRagReader(ocr="auto").load_data(tmp_path), [record])


# --- bad files ------------------------------------------------------------------------------------------------
@pytest.fixture
def with_corrupt(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A folder with a good text file and a PNG cut in half."""
    good = tmp_path / "a_good.txt"
    good.write_text("A good file.", encoding="utf-8")
    whole = mediagen.write_image(tmp_path / "whole.tmp", "PNG", size=(64, 64))
    broken = mediagen.truncated_copy(whole, tmp_path / "b_broken.png")
    whole.unlink()
    return tmp_path, good, broken


def test_bad_files_are_skipped_with_a_warning_or_raised(with_corrupt, caplog) -> None:
    folder, good, broken = with_corrupt
    loaders = {
        "langchain": lambda errors: MMRagLoader(folder, errors=errors).load(),
        "llama_index": lambda errors: MMRagReader(errors=errors).load_data(folder),
    }
    for name, load in loaders.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            documents = load("skip")
        assert [d.metadata["doc_id"] for d in documents] == [str(good)], name
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and str(broken) in warnings[0], (name, warnings)
        with pytest.raises(MediaError, match=broken.name):
            load("raise")
    with pytest.raises(MediaError, match="missing.txt"):
        MMRagLoader(folder / "missing.txt").load()
    with pytest.raises(MediaError, match="missing.txt"):
        MMRagReader().load_data([good, folder / "missing.txt"])
    with pytest.raises(InvalidInputError, match="errors"):
        MMRagLoader(folder, errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="errors"):
        MMRagReader(errors="ignore")  # type: ignore[arg-type]


@pytest.mark.slow  # real models
def test_include_exclude_and_a_list_of_paths(corpus, stored) -> None:
    folder = corpus["text"].parent
    chosen = MMRagLoader(folder, include=["*.md", "*.csv", "*.txt"], exclude=["notes.*"]).load()
    assert list(dict.fromkeys(d.metadata["doc_id"] for d in chosen)) == [str(corpus["csv"]), str(corpus["markdown"])]
    documents = MMRagReader().load_data([corpus["text"], corpus["csv"]])  # read in sorted order
    assert [d.id_ for d in documents] == [r.id for kind in ("text", "csv") for r in stored[str(corpus[kind])]]


# --- SimpleDirectoryReader ------------------------------------------------------------------------------------
@pytest.mark.slow  # real models
def test_reader_is_a_file_extractor_of_simple_directory_reader(corpus, stored, tmp_path) -> None:
    kinds = ("pdf", "docx", "image", "csv")
    for kind in kinds:
        shutil.copyfile(corpus[kind], tmp_path / corpus[kind].name)
    reader = MMRagReader()
    documents = SimpleDirectoryReader(
        str(tmp_path), file_extractor={corpus[kind].suffix: reader for kind in kinds}
    ).load_data()
    grouped = by_doc_id(documents)
    assert len(grouped) == len(kinds)
    for kind in kinds:
        copy = tmp_path / corpus[kind].name
        original = stored[str(corpus[kind].absolute())]
        found = grouped[str(copy)]
        # the same content at another path: the same texts and pictures, ids derived from the new path
        assert sorted((d.text, d.metadata.get("picture")) for d in found) == sorted(
            (r.text or "", r.metadata.get("picture")) for r in original
        ), kind
        for document in found:
            assert document.metadata["file_path"] == str(copy)  # SimpleDirectoryReader's own metadata, kept
            assert document.metadata["source"] == str(copy) and document.metadata["file_name"] == copy.name
            excluded = document.excluded_embed_metadata_keys
            assert "file_size" in excluded and "doc_id" in excluded  # SimpleDirectoryReader's exclusions and ours
    ids = [d.id_ for d in documents]
    assert ids == [d.id_ for d in reader.load_data(sorted(tmp_path.iterdir()))]
