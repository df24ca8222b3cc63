"""Ingestion end to end with real models: tiny CLIP (trained in a fixture), MiniLM, Whisper tiny.en."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mm_rag import MultimodalStore, TextEmbedder, WhisperTranscriber, ingest
from mm_rag.errors import InvalidInputError

pytestmark = pytest.mark.slow

GOOD = ["video", "silent_video", "wav", "pdf", "html", "markdown", "utf8_text", "cp1252_text"]
GOOD += ["jpeg", "png", "gif", "webp", "bmp", "tiff"]


@pytest.fixture(scope="module")
def text_embedder(minilm_dir: Path) -> TextEmbedder:
    return TextEmbedder(minilm_dir, device="cpu")


@pytest.fixture(scope="module")
def transcriber(whisper_ct2_dir: Path) -> WhisperTranscriber:
    return WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu", language="en")


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, media_corpus, bad_corpus) -> tuple[Path, dict[str, tuple[Path, str]]]:
    """Good files and the bad-input corpus side by side in one folder tree: name → (path, expected)."""
    root = tmp_path_factory.mktemp("mixed")
    files = {}
    for name in GOOD:
        target = root / "good" / media_corpus[name].path.name
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(media_corpus[name].path, target)
        files[name] = (target, "ok")
    for name, item in bad_corpus.items():
        target = root / "bad" / item.path.name
        target.parent.mkdir(exist_ok=True)
        if item.path.is_symlink():
            target.symlink_to(item.path.readlink())
        else:
            shutil.copyfile(item.path, target)
        files[name] = (target, item.expected)
    return root, files


@pytest.fixture(scope="module")
def ingested(mixed_folder, tiny_clip, text_embedder, transcriber):
    root, files = mixed_folder
    store = MultimodalStore(root.parent / "store")
    report = ingest(root, store, clip=tiny_clip, text=text_embedder, transcriber=transcriber)
    yield store, report, files
    store.close()


def test_every_good_file_is_stored_and_every_bad_one_reported(ingested) -> None:
    store, report, files = ingested
    documents = store.documents()
    for name, (path, expected) in files.items():
        key = str(path)
        if expected == "ok":
            assert key in report.added, (name, report.failed.get(key), report.skipped.get(key))
            assert str(path.absolute()) in documents, name
        elif expected == "error":
            assert key in report.failed, (name, report.skipped.get(key))
            assert report.failed[key], name
            assert str(path.absolute()) not in documents, name
        else:  # silent audio: nothing to store, reported with a reason
            assert report.skipped.get(key) == "no speech found", name
    assert report.records == store.count()
    assert "failed" in report.summary()


def test_bad_file_reasons_name_the_problem(ingested) -> None:
    _, report, files = ingested
    reasons = {name: report.failed[str(path)] for name, (path, expected) in files.items() if expected == "error"}
    assert "empty" in reasons["empty.jpg"]
    assert "pixel" in reasons["bomb_png"] or "decompression" in reasons["bomb_png"]
    assert "truncated" in reasons["truncated_jpeg"] or "corrupt" in reasons["truncated_jpeg"]


def test_records_carry_modalities_spaces_and_times(ingested, mixed_folder) -> None:
    store, _, files = ingested
    by_doc: dict[str, list] = {}
    for record in store:
        by_doc.setdefault(record.doc_id, []).append(record)
    video = by_doc[str(files["video"][0])]
    keyframes = [r for r in video if r.text is None]
    transcript = [r for r in video if r.text]
    assert len(keyframes) >= 3 and transcript, "a video yields keyframes and transcript windows"
    assert all(r.modality == "video" for r in video)
    for record in video:
        assert 0 <= record.metadata["start"] <= record.metadata["end"] <= 8.0
    assert {r.modality for r in by_doc[str(files["wav"][0])]} == {"audio"}
    pdf_pages = {r.metadata["page"] for r in by_doc[str(files["pdf"][0])]}
    assert pdf_pages == {1, 2}
    assert store.count("clip") == store.count()  # every record reaches the CLIP space (image or text tower)
    assert store.count("text") == sum(1 for r in store if r.text)


def test_text_query_finds_the_transcript_moment(ingested, text_embedder, spoken_sentences) -> None:
    store, _, _ = ingested
    hits = store.search("text", text_embedder.embed_query("weather"), k=3, filter={"modality": {"$in": ["audio", "video"]}})
    assert hits and all("start" in hit.record.metadata for hit in hits)


def test_rerun_skips_unchanged_files_and_replaces_changed_ones(tmp_path, tiny_clip, text_embedder) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Harbour cranes unload containers at dawn.")
    (folder / "b.txt").write_text("A violin concerto in three movements.")
    store = MultimodalStore(tmp_path / "store")
    first = ingest(folder, store, clip=tiny_clip, text=text_embedder)
    assert sorted(Path(p).name for p in first.added) == ["a.txt", "b.txt"]
    again = ingest(folder, store, clip=tiny_clip, text=text_embedder)
    assert again.added == [] and again.updated == [] and set(again.skipped.values()) == {"unchanged"}

    (folder / "a.txt").write_text("Glaciers carve valleys over thousands of years.")
    (folder / "b.txt").unlink()
    changed = ingest(folder, store, clip=tiny_clip, text=text_embedder, prune=True)
    assert [Path(p).name for p in changed.updated] == ["a.txt"]
    assert [Path(p).name for p in changed.pruned] == ["b.txt"]
    texts = [record.text for record in store]
    assert texts == ["Glaciers carve valleys over thousands of years."]
    store.close()
    with MultimodalStore.open(tmp_path / "store") as reopened:  # ingest saved it
        assert [record.text for record in reopened] == texts


def test_text_to_image_through_the_clip_space(tmp_path, tiny_clip) -> None:
    from fixtures.tiny_clip import CLASSES, caption, draw_shape

    folder = tmp_path / "shapes"
    folder.mkdir()
    for number, (colour, shape) in enumerate(CLASSES):
        draw_shape(colour, shape, seed=1000 + number).save(folder / f"{colour}-{shape}.png")
    store = MultimodalStore()
    report = ingest(folder, store, clip=tiny_clip)
    assert len(report.added) == len(CLASSES) and not report.failed
    correct = 0
    for colour, shape in CLASSES:
        hit = store.search("clip", tiny_clip.embed_texts([caption(colour, shape)])[0], k=1)[0]
        correct += hit.record.metadata["file_name"] == f"{colour}-{shape}.png"
    assert correct >= len(CLASSES) - 1
    store.close()


def test_include_exclude_and_errors(tmp_path, text_embedder) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "keep.md").write_text("# Title\n\nKept.")
    (folder / "sub" / "skip.txt").write_text("Not kept.")
    (folder / ".hidden.txt").write_text("Hidden.")
    store = MultimodalStore()
    report = ingest(folder, store, text=text_embedder, include=["*.md", "*.txt"], exclude=["sub/*"])
    assert [Path(p).name for p in report.added] == ["keep.md"]
    missing = ingest(tmp_path / "nope", store, text=text_embedder)
    assert list(missing.failed.values()) == ["no such file or directory"]
    with pytest.raises(InvalidInputError):
        ingest(folder, store)
    store.close()


def test_audio_without_transcriber_and_images_without_clip_are_skipped(tmp_path, text_embedder, media_corpus) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    for name in ("wav", "png"):
        shutil.copyfile(media_corpus[name].path, folder / media_corpus[name].path.name)
    store = MultimodalStore()
    report = ingest(folder, store, text=text_embedder)
    assert sorted(report.skipped.values()) == [
        "audio: no transcriber configured", "image: no image embedder (CLIP) configured, and no OCR engine"
    ]
    assert store.count() == 0
    store.close()
    assert report.records == 0


def test_image_records_keep_the_source_size_though_decoded_at_model_scale(tmp_path, tiny_clip) -> None:
    from fixtures.tiny_clip import draw_shape
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    draw_shape("red", "circle", size=(640, 480)).save(folder / "wide.jpg", quality=90)
    store = MultimodalStore()
    report = ingest(folder, store, clip=tiny_clip)
    (record,) = list(store)
    assert report.added and (record.metadata["width"], record.metadata["height"]) == (640, 480)
    # the same vector as embedding the file directly (where JPEGs also decode at the model's scale)
    stored = store.vectors("clip", [record.id])[record.id]
    assert float(stored @ tiny_clip.embed_images([folder / "wide.jpg"])[0]) > 0.9999
    assert Image.open(folder / "wide.jpg").size == (640, 480)
    store.close()


def test_another_model_cannot_write_into_a_space_made_by_the_first(tmp_path, tiny_clip, tiny_clip_paths) -> None:
    from fixtures.tiny_clip import draw_shape

    from mm_rag import OpenCLIPEmbedder

    draw_shape("red", "circle").save(tmp_path / "circle.png")
    store = MultimodalStore()
    ingest(tmp_path, store, clip=tiny_clip)
    assert store.spaces[tiny_clip.space].model == tiny_clip.spec
    untrained = OpenCLIPEmbedder(tiny_clip_paths.config, None, device="cpu")  # same shape, other weights
    (tmp_path / "square.png").write_bytes((tmp_path / "circle.png").read_bytes()[:-1] + b"\0")
    before = list(store)
    with pytest.raises(InvalidInputError, match="holds vectors of the model"):
        ingest(tmp_path, store, clip=untrained)
    assert list(store) == before
    store.close()
