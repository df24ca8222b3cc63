"""OCR (`mm_rag.embed.ocr`) with the real engines, Tesseract and RapidOCR, on the labelled pictures of
`tests/fixtures/ocrset.py`: text in rendered and degraded pictures, codes and amounts verbatim, nothing from
pictures without text, thread safety, bounded time on a huge photo, and the errors for unknown or missing engines.

Each engine reads a subset of the set once per session (`readings`); the figures for the whole set are in
`benchmarks/README.md` ("OCR engines").
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fixtures.ocrset import build_set, char_accuracy, flat, huge_photo, render_lines
from PIL import Image

from mm_rag._optional import MissingDependencyError
from mm_rag.embed import ocr, ocr_pictures
from mm_rag.embed.ocr import OcrText, available_engines, find_tessdata, load_ocr
from mm_rag.errors import InvalidInputError

ENGINES = ("tesseract", "rapidocr")
# A picture of each kind (and every picture without text); the rest of the set is the benchmark's.
TEXT_PICTURES = (
    "clean-sans-12", "clean-serif-48", "clean-mono-22", "rotated-mono-+5.0", "blurred-serif-r1.3",
    "jpeg-serif-q12", "screenshot-invoice-16", "screenshot-dashboard-15", "figure-sign",
)  # fmt: skip
# Character accuracy (1 - CER) bars. Measured on these pictures: every picture >= 0.96 with both engines (the
# lowest: Tesseract on the invoice, which misses its "Pay now" button), the mean >= 0.99; the bars leave room
# for other builds of the engines.
MIN_CHAR_ACCURACY = 0.90
MIN_MEAN_CHAR_ACCURACY = 0.96


@pytest.fixture(scope="module")
def pictures():
    samples = build_set(0)
    chosen = [s for s in samples if s.name in TEXT_PICTURES or s.category == "no_text"]
    assert {s.name for s in chosen} >= set(TEXT_PICTURES)
    return {s.name: s for s in chosen}


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):
    return load_ocr(request.param)


@pytest.fixture(scope="module")
def readings(engine, pictures):
    """What `engine` read in each chosen picture, read once, from one thread."""
    return {name: engine.read(sample.image) for name, sample in pictures.items()}


# --------------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------------
def test_text_is_found_in_rendered_and_degraded_pictures(engine, pictures, readings) -> None:
    scores = {name: char_accuracy(pictures[name].text, readings[name].text) for name in TEXT_PICTURES}
    low = {name: (round(score, 3), readings[name].text) for name, score in scores.items() if score < MIN_CHAR_ACCURACY}
    assert not low, f"{engine.name} read too little: {low}"
    assert sum(scores.values()) / len(scores) >= MIN_MEAN_CHAR_ACCURACY
    for name in TEXT_PICTURES:  # one line per line of text: words with single spaces, no blank lines
        for line in readings[name].text.split("\n"):
            assert line and line == flat(line)


def test_codes_and_amounts_survive_exactly_in_a_screenshot(engine, pictures, readings) -> None:
    sample = pictures["screenshot-invoice-16"]
    assert {"PO-77812-B", "INV-2024-0413", "$1,284.50", "1.284,50 EUR"} <= set(sample.exact)
    text = flat(readings[sample.name].text)
    assert [code for code in sample.exact if code not in text] == []
    assert "Purchase order PO-77812-B" in readings[sample.name].text.split("\n")  # a label and its value: one row


def test_pictures_without_text_give_empty_text(engine, pictures, readings) -> None:
    empty = OcrText("", 0.0, engine.name)
    found = {name: result for name, result in readings.items() if pictures[name].category == "no_text"}
    assert len(found) == 11
    assert {name: result for name, result in found.items() if result != empty} == {}


def test_confidence_is_a_share_and_names_the_engine(engine, readings) -> None:
    for result in readings.values():
        assert isinstance(result, OcrText) and result.engine == engine.name
        assert 0.0 <= result.confidence <= 1.0
        assert (result.confidence > 0.5) == bool(result.text)


def test_reading_from_threads_gives_the_results_of_one_thread(engine, pictures, readings) -> None:
    names = ["clean-sans-12", "clean-mono-22", "screenshot-dashboard-15", "no_text-shapes"] * 2
    with ThreadPoolExecutor(4) as pool:  # ingestion's worker count
        results = list(pool.map(lambda name: engine.read(pictures[name].image), names))
    assert results == [readings[name] for name in names]


def test_a_huge_photo_is_read_at_a_bounded_size(engine, monkeypatch) -> None:
    """An 8000 x 8000 photo is shrunk to `MAX_SIDE` before the engine sees it (what bounds its cost), and its
    caption is still read. (Its speed is measured in benchmarks/bench_ocr.py, not asserted here.)"""
    photo, caption = huge_photo(8000)
    prepared = []
    original = ocr_pictures.prepare

    def recording(image, mode):
        result = original(image, mode)
        prepared.append(result.size)
        return result

    monkeypatch.setattr(ocr_pictures, "prepare", recording)
    result = engine.read(photo)
    assert prepared and all(max(size) <= ocr_pictures.MAX_SIDE for size in prepared)
    assert caption in result.text


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "1", "CMYK"])
def test_any_picture_mode_is_read(engine, mode: str) -> None:
    page = render_lines(["Invoice INV-2024-0413 paid"], "sans", 28)
    if mode == "RGBA":  # dark text on a transparent background: flattened onto white, not onto black
        picture = Image.new("RGBA", page.size, (0, 0, 0, 0))
        picture.putalpha(Image.eval(page, lambda v: 255 - v))
    elif mode == "I;16":
        picture = Image.fromarray(np.asarray(page, dtype=np.uint16) * 257)
    else:
        picture = page.convert(mode)
    assert picture.mode == mode
    assert "INV-2024-0413" in engine.read(picture).text


def test_tiny_pictures_give_empty_text_and_other_objects_are_refused(engine) -> None:
    assert engine.read(Image.new("RGB", (1, 1))) == OcrText("", 0.0, engine.name)
    assert engine.read(Image.new("L", (400, 4), 255)) == OcrText("", 0.0, engine.name)
    with pytest.raises(InvalidInputError, match="PIL image"):
        engine.read(np.zeros((40, 40), np.uint8))


# --------------------------------------------------------------------------------------------------------------
# loading, the registry, missing pieces
# --------------------------------------------------------------------------------------------------------------
def test_engines_are_loaded_once_and_auto_is_the_default() -> None:
    assert set(ocr.ENGINES) == set(ENGINES) and ocr.DEFAULT_ENGINE in ENGINES
    assert available_engines() == list(ENGINES)
    assert load_ocr("tesseract") is load_ocr("tesseract")
    assert load_ocr() is load_ocr(ocr.DEFAULT_ENGINE)
    assert load_ocr().name == ocr.DEFAULT_ENGINE
    assert isinstance(load_ocr("rapidocr"), ocr.OcrEngine)


def test_an_unknown_engine_names_the_known_ones() -> None:
    with pytest.raises(InvalidInputError, match="easyocr") as raised:
        load_ocr("easyocr")
    assert all(name in str(raised.value) for name in ("auto", *ENGINES))


def test_a_missing_engine_says_what_to_install(monkeypatch) -> None:
    default = ocr.DEFAULT_ENGINE
    other = next(name for name in ENGINES if name != default)
    missing = {ocr.ENGINES[default].module}
    monkeypatch.setattr(ocr, "available", lambda module: module not in missing)
    with pytest.raises(MissingDependencyError, match=r"pip install 'mm-rag\[ocr\]'"):
        load_ocr(default)
    assert available_engines() == [other]
    assert load_ocr().name == other  # auto falls back to the engine that is there
    missing.add(ocr.ENGINES[other].module)
    with pytest.raises(MissingDependencyError, match="tesseract-ocr-eng"):
        load_ocr()


@pytest.mark.parametrize("name", ENGINES)
def test_an_engine_whose_import_fails_raises_missing_dependency(monkeypatch, name: str) -> None:
    monkeypatch.setitem(sys.modules, ocr.ENGINES[name].module, None)  # `import` now raises ImportError
    with pytest.raises(MissingDependencyError, match=ocr.ENGINES[name].module) as raised:
        ocr.ENGINES[name].build("eng")  # what load_ocr calls, past its cache
    assert isinstance(raised.value.__cause__, ImportError)


def test_tessdata_is_found_from_the_environment_or_the_usual_folders(monkeypatch, tmp_path) -> None:
    found = find_tessdata("eng")
    assert (found / "eng.traineddata").is_file()
    monkeypatch.setenv("TESSDATA_PREFIX", str(found))
    assert find_tessdata() == found
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    monkeypatch.setattr(ocr, "_TESSDATA_GLOBS", ())
    with pytest.raises(MissingDependencyError, match="apt-get install tesseract-ocr-eng"):
        find_tessdata("eng")
    assert "tesseract" not in available_engines()
    with pytest.raises(MissingDependencyError, match="tesseract-ocr-deu"):
        ocr.TesseractEngine("eng+deu", tessdata=None)


def test_languages_an_engine_cannot_read_are_refused() -> None:
    with pytest.raises(MissingDependencyError, match="xyz.traineddata"):
        load_ocr("tesseract", languages="xyz")
    with pytest.raises(InvalidInputError, match="chi_sim and eng"):
        load_ocr("rapidocr", languages="deu")


def test_importing_the_module_loads_no_engine() -> None:
    code = (
        "import sys, mm_rag.embed.ocr as o; o.available_engines(); "
        "print(sorted(m for m in ('tesserocr', 'rapidocr_onnxruntime', 'onnxruntime', 'cv2') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
