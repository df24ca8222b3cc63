"""Text inside pictures (OCR): Tesseract 5 through tesserocr's C API, or RapidOCR (PP-OCRv4 on ONNX Runtime).

`load_ocr()` gives a shared `OcrEngine`; its thread-safe `read(image)` returns an `OcrText`: the lines found,
top to bottom and left to right, with the mean confidence of what was kept, or ``OcrText("", 0.0, engine)``
for a picture without text (both engines see letters in brick walls and noise; the filters below drop them).
Thresholds come from `benchmarks/bench_ocr.py --sweep` on `tests/fixtures/ocrset.py` (3 seeds, 114 pictures).
"""

from __future__ import annotations

import glob
import os
import statistics
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from mm_rag._optional import MissingDependencyError, available, require
from mm_rag.embed import ocr_pictures
from mm_rag.embed.base import shared_model
from mm_rag.errors import InvalidInputError, MMRagError

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["DEFAULT_ENGINE", "ENGINES", "EngineSpec", "OcrEngine", "OcrError", "OcrText", "RapidOcrEngine"]
__all__ += ["TesseractEngine", "available_engines", "find_tessdata", "load_ocr"]

# Tesseract: as accurate as RapidOCR on the set (char 0.996 vs 0.997, word 0.987 vs 0.978 over 3 seeds), every
# code and amount verbatim where RapidOCR reads O as 0 (0.989 vs 0.934), and 5.8x faster (benchmarks/README.md).
DEFAULT_ENGINE = "tesseract"
# A line (Tesseract: the median of its words) or a box (RapidOCR) less sure than this is dropped whole. On the
# 114 pictures of the sweep, true Tesseract lines had >= 0.84 and garbage with 3+ letters/digits <= 0.43; true
# RapidOCR boxes >= 0.91, garbage <= 0.69 (".l..i.l" on a bar chart). Each threshold is the middle of its gap;
# the sweep loses no text up to 0.8 and lets no false text through from 0.5 (Tesseract) / 0 (RapidOCR) up.
MIN_CONFIDENCE = {"tesseract": 0.65, "rapidocr": 0.80}
# Two safety nets, which matter without the confidence filter (there, false text 6% -> 3% -> 0% with one and
# both): words with under half letters/digits go ("—“‘", "|", "*~°"), and so do rows left with at most 2 letters
# or digits ("YO" read at 0.63 in a wood grain, "za." in bricks).
MIN_ALNUM_SHARE = 0.5
MAX_GARBAGE_LINE_ALNUM = 2
# PP-OCRv4's recogniser (mostly Chinese training) often emits no space between English words; where the space
# class gets this probability between two characters, there is one (word accuracy 0.72 with the model's own
# spaces, 0.96 at 0.02, 0.978 at 0.01, 0.968 at 0.005).
SPACE_PROBABILITY = 0.01
# RapidOCR finds boxes on a copy at most this large (PaddleOCR's default) and reads each from the bounded picture.
DETECT_SIDE = 960
# A picture whose median text line is under 16 px is read at twice the size (3 seeds: 0.995 -> 0.997).
SMALL_TEXT_PX = 16

_TESSDATA_GLOBS = ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata", "/usr/local/share/tessdata",
                   "/opt/homebrew/share/tessdata")  # fmt: skip


class OcrError(MMRagError):
    """An OCR engine failed to read a picture (the engine's own error is chained as the cause)."""


@dataclass(frozen=True, slots=True)
class OcrText:
    """What an engine read in one picture.

    Attributes:
        text: The lines found, top to bottom (left to right within a row), joined with ``"\\n"``, words with
            single spaces; ``""`` when nothing trustworthy was found.
        confidence: Mean confidence (0..1) of the kept words, weighted by length; 0.0 when `text` is empty.
        engine: ``"tesseract"`` or ``"rapidocr"``.
    """

    text: str
    confidence: float
    engine: str


@runtime_checkable
class OcrEngine(Protocol):
    """Reads the text in a picture; `read` may be called from several threads at once."""

    name: str

    def read(self, image: Image) -> OcrText:
        """The text in `image` (any PIL mode and size), or an empty `OcrText` when there is none."""
        ...


class _Word(NamedTuple):
    """A word (Tesseract) or a text box (RapidOCR), with the geometry that places it in a row."""

    text: str
    confidence: float  # 0..1
    left: float
    middle: float  # vertical centre of its line
    height: float  # of its line, along the box's own (possibly tilted) sides


def _clean(text: str) -> str:
    # NFKC turns the full-width punctuation of RapidOCR's Chinese/English model ("：", "，") into ASCII.
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _alnum(words: list[_Word]) -> int:
    return sum(sum(map(str.isalnum, word.text)) for word in words)


def _finish(units: list[list[_Word]], engine: str, min_confidence: float, min_alnum_share: float,
            max_garbage_line_alnum: int) -> OcrText:  # fmt: skip
    """Drop units (Tesseract lines, RapidOCR boxes) below `min_confidence` by their median, then words with too
    few letters/digits; arrange the rest in rows; drop rows with too few letters/digits; join."""
    kept = [
        word
        for unit in units
        if unit and statistics.median(word.confidence for word in unit) >= min_confidence
        for word in unit
        if word.text and _alnum([word]) >= min_alnum_share * len(word.text)
    ]
    lines = [line for line in _rows(kept) if _alnum(line) > max_garbage_line_alnum]
    words = [word for line in lines for word in line]
    if not words:
        return OcrText("", 0.0, engine)
    confidence = sum(w.confidence * len(w.text) for w in words) / sum(len(w.text) for w in words)
    return OcrText("\n".join(" ".join(w.text for w in line) for line in lines), round(confidence, 4), engine)


def _rows(words: list[_Word]) -> list[list[_Word]]:
    """Reading order: a word whose centre is within half a line height of a row's joins it; rows left to right.
    (Labels and their values stay on one row; side-by-side columns of prose would interleave.)"""
    rows: list[list[_Word]] = []
    for word in sorted(words, key=lambda w: w.middle):
        for row in rows:
            middle = sum(w.middle for w in row) / len(row)
            if abs(word.middle - middle) <= 0.5 * min(word.height, *(w.height for w in row)):
                row.append(word)
                break
        else:
            rows.append([word])
    return [sorted(row, key=lambda w: w.left) for row in rows]


class _Engine:
    """What both engines share: `read` filters what `_read_lines` gives unfiltered (the benchmark's sweep
    replays `_finish` over other thresholds on the same)."""

    name: str
    languages: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}(languages={self.languages!r})"

    def read(self, image: Image) -> OcrText:
        """The text in `image` (any PIL mode and size), or an empty `OcrText` when there is none."""
        from PIL import Image as PILImage

        if not isinstance(image, PILImage.Image):
            raise InvalidInputError(f"read() needs a PIL image, not {type(image).__name__}")
        if min(image.size) < 8:  # nothing legible; Tesseract would only print warnings
            return OcrText("", 0.0, self.name)
        units = self._read_lines(image)
        return _finish(units, self.name, MIN_CONFIDENCE[self.name], MIN_ALNUM_SHARE, MAX_GARBAGE_LINE_ALNUM)

    def _read_lines(self, image: Image) -> list[list[_Word]]:
        raise NotImplementedError


def find_tessdata(languages: str = "eng") -> Path:
    """The first tessdata folder holding ``<language>.traineddata`` for each of `languages` ("eng", "eng+deu"):
    ``$TESSDATA_PREFIX`` (or its ``tessdata/``), then the Debian, /usr/local and Homebrew folders.

    Raises `MissingDependencyError` naming the package that installs the data.
    """
    wanted = [lang for lang in languages.split("+") if lang]
    prefix = os.environ.get("TESSDATA_PREFIX")
    candidates = [Path(prefix), Path(prefix) / "tessdata"] if prefix else []
    for pattern in _TESSDATA_GLOBS:
        candidates += [Path(path) for path in sorted(glob.glob(pattern), reverse=True)]  # newest version first
    for folder in candidates:
        if wanted and all((folder / f"{lang}.traineddata").is_file() for lang in wanted):
            return folder
    packages = " ".join(f"tesseract-ocr-{lang.lower().replace('_', '-')}" for lang in wanted)
    raise MissingDependencyError(
        f"OCR with Tesseract needs {', '.join(f'{lang}.traineddata' for lang in wanted)}, found in none of "
        f"{', '.join(map(str, candidates))}: apt-get install {packages} (macOS: brew install tesseract-lang), "
        "or set TESSDATA_PREFIX to the folder that holds it"
    )


class TesseractEngine(_Engine):
    """Tesseract 5 (LSTM) through tesserocr, one `PyTessBaseAPI` per calling thread (an API is not thread-safe).

    The picture is made grey, its dark-background regions inverted, levelled when tilted and enlarged when its
    text is small; Tesseract then finds the text blocks itself (page segmentation "auto", which skips regions
    that are not text), and its words are arranged in rows (`_rows`).
    """

    name = "tesseract"

    def __init__(self, languages: str = "eng", tessdata: str | os.PathLike[str] | None = None) -> None:
        self._tesserocr = require("tesserocr", "OCR with Tesseract")
        self.languages = languages
        self.tessdata = Path(tessdata) if tessdata is not None else find_tessdata(languages)
        self._local = threading.local()
        self._api()  # fail now, in the loading thread, if the data cannot be loaded

    def _api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            tesserocr = self._tesserocr
            try:
                api = tesserocr.PyTessBaseAPI(path=str(self.tessdata), lang=self.languages, psm=tesserocr.PSM.AUTO,
                                              oem=tesserocr.OEM.LSTM_ONLY)  # fmt: skip
            except RuntimeError as error:
                raise MissingDependencyError(
                    f"Tesseract cannot load {self.languages!r} from {self.tessdata}"
                ) from error
            self._local.api = api
        return api

    def _read_lines(self, image: Image) -> list[list[_Word]]:
        """Every word Tesseract reports, unfiltered, in its lines."""
        from PIL import Image as PILImage

        gray = ocr_pictures.deskew(ocr_pictures.light_background(ocr_pictures.prepare(image, "L")))
        api = self._api()
        try:
            api.SetImage(gray)
            if self._median_line_height(api) < SMALL_TEXT_PX:
                api.SetImage(gray.resize((gray.width * 2, gray.height * 2), PILImage.Resampling.LANCZOS))
            api.Recognize()
            return self._lines(api)
        except RuntimeError as error:
            raise OcrError(f"Tesseract failed on a {image.width}x{image.height} picture") from error
        finally:
            api.Clear()  # the picture and its results go; the loaded model stays

    def _median_line_height(self, api: Any) -> float:
        """From layout analysis alone (a fraction of recognition); infinite when no line is found."""
        ril, iterator = self._tesserocr.RIL, api.AnalyseLayout()
        lines = self._tesserocr.iterate_level(iterator, ril.TEXTLINE) if iterator is not None else []
        heights = [box[3] - box[1] for line in lines if (box := line.BoundingBox(ril.TEXTLINE))]
        return statistics.median(heights) if heights else float("inf")

    def _lines(self, api: Any) -> list[list[_Word]]:
        ril, iterator = self._tesserocr.RIL, api.GetIterator()
        lines: list[list[_Word]] = [[]]
        for word in self._tesserocr.iterate_level(iterator, ril.WORD) if iterator is not None else []:
            text = "" if word.Empty(ril.WORD) else _clean(word.GetUTF8Text(ril.WORD))
            box, line = word.BoundingBox(ril.WORD), word.BoundingBox(ril.TEXTLINE)
            if text and box and line:
                lines[-1].append(_Word(text, word.Confidence(ril.WORD) / 100, box[0], (line[1] + line[3]) / 2,
                                       line[3] - line[1]))  # fmt: skip
            if word.IsAtFinalElement(ril.TEXTLINE, ril.WORD) and lines[-1]:
                lines.append([])
        return [line for line in lines if line]


class RapidOcrEngine(_Engine):
    """RapidOCR's PP-OCRv4 detector and recogniser on ONNX Runtime (models inside its wheel).

    Boxes are found on a copy at most `DETECT_SIDE` px and each is read from the bounded picture; spaces the
    recogniser half-saw are restored (`SPACE_PROBABILITY`). The upside-down classifier is not run: it adds a
    model pass per box for text that pictures rarely hold. The ONNX sessions are shared by all threads.
    """

    name = "rapidocr"
    LANGUAGES = frozenset({"eng", "chi_sim"})  # what the bundled Chinese/English models read

    def __init__(self, languages: str = "eng") -> None:
        if unknown := set(languages.split("+")) - self.LANGUAGES:
            raise InvalidInputError(f"RapidOCR's models read {' and '.join(sorted(self.LANGUAGES))}, not {unknown}")
        module = require("rapidocr_onnxruntime", "OCR with RapidOCR")
        # Ingestion reads from 4 threads at once, each running the shared sessions: a quarter of the cores each
        # (1 on 2 cores), so that they do not oversubscribe the machine.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, min(4, cores // 4))
        ocr = module.RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1, use_cls=False)
        try:  # RapidOCR 1.3/1.4's pieces; TextDetector.__call__ itself swaps a shared object per call (a race)
            from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess
            from rapidocr_onnxruntime.utils.infer_engine import ONNXRuntimeError

            det, rec = ocr.text_det, ocr.text_rec
            self._detect_input = DetPreProcess(DETECT_SIDE, "max", det.mean, det.std)
            self._detect, self._boxes, self._tidy = det.infer, det.postprocess_op, det.filter_tag_det_res
            self._crops, self._recognise, self._rec_input = ocr.get_crop_img_list, rec.session, rec.resize_norm_img
            self._characters = rec.postprocess_op.character
        except (AttributeError, ImportError) as error:
            raise MissingDependencyError("mm-rag needs rapidocr-onnxruntime 1.3 or 1.4: "
                                         "pip install 'rapidocr-onnxruntime>=1.3,<1.5'") from error  # fmt: skip
        self._errors, self._space, self.languages = (ONNXRuntimeError,), self._characters.index(" ", 1), languages

    def _read_lines(self, image: Image, space_probability: float = SPACE_PROBABILITY) -> list[list[_Word]]:
        """Every box read, unfiltered, each a one-word unit."""
        return [[self._word(probs, corners, space_probability)] for probs, corners in self._outputs(image)]

    def _outputs(self, image: Image) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each box found: the recogniser's class probabilities per step, and its corners (clockwise)."""
        bgr = np.ascontiguousarray(np.asarray(ocr_pictures.prepare(image, "RGB"))[:, :, ::-1])
        size = bgr.shape[:2]
        try:
            tensor = self._detect_input(bgr)  # shrunk to DETECT_SIDE, sides rounded to multiples of 32
            boxes = self._boxes(self._detect(tensor)[0], size)[0] if tensor is not None else []
            if not len(boxes):
                return []
            boxes = np.asarray(self._tidy(boxes, size), dtype=np.float32)
            crops = self._crops(bgr, list(boxes))
            order = np.argsort([crop.shape[1] / crop.shape[0] for crop in crops], kind="stable")
            outputs = []
            for start in range(0, len(order), 6):  # batches of similar widths pad little
                batch = order[start : start + 6]
                widest = max(320 / 48, *(crops[i].shape[1] / crops[i].shape[0] for i in batch))
                tensor = np.stack([self._rec_input(crops[i], widest) for i in batch]).astype(np.float32)
                outputs += [(probs, boxes[i]) for i, probs in zip(batch, self._recognise(tensor)[0])]
            return outputs
        except self._errors as error:
            raise OcrError(f"RapidOCR failed on a {image.width}x{image.height} picture") from error

    def _word(self, probs: np.ndarray, corners: np.ndarray, space_probability: float) -> _Word:
        """CTC greedy decoding, with a space wherever the space class reached `space_probability` between two
        characters; the confidence is the mean probability of the characters."""
        best = probs.argmax(axis=1)
        chars, scores, previous = [], [], -1  # previous: the last character's step, -1 after a space
        for step in np.flatnonzero((best != 0) & np.concatenate(([True], best[1:] != best[:-1]))):
            index = int(best[step])
            if index != self._space and previous >= 0:
                gap = probs[previous + 1 : step, self._space]
                chars.append(" " if gap.max(initial=0.0) >= space_probability else "")
            chars.append(" " if index == self._space else self._characters[index])
            scores += [] if index == self._space else [float(probs[step, index])]
            previous = -1 if index == self._space else int(step)
        height = (np.linalg.norm(corners[3] - corners[0]) + np.linalg.norm(corners[2] - corners[1])) / 2
        confidence = float(np.mean(scores)) if scores else 0.0
        return _Word(_clean("".join(chars)), confidence, float(corners[:, 0].min()), float(corners[:, 1].mean()),
                     float(height))  # fmt: skip


def _english_tessdata() -> bool:
    try:
        return bool(find_tessdata("eng"))
    except MissingDependencyError:
        return False


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """How to build an engine: the module it imports, anything else it needs (checked cheaply), its factory."""

    module: str
    feature: str
    build: Callable[[str], OcrEngine]  # languages -> engine
    ready: Callable[[], bool]


ENGINES: dict[str, EngineSpec] = {
    "tesseract": EngineSpec("tesserocr", "OCR with Tesseract", TesseractEngine, _english_tessdata),
    "rapidocr": EngineSpec("rapidocr_onnxruntime", "OCR with RapidOCR", RapidOcrEngine, lambda: True),
}


def available_engines() -> list[str]:
    """The engines that can load here: package installed (and, for Tesseract, its English data found)."""
    return [name for name, spec in ENGINES.items() if available(spec.module) and spec.ready()]


def load_ocr(engine: str = "auto", *, languages: str = "eng") -> OcrEngine:
    """The OCR engine `engine` for `languages` (Tesseract codes, "eng+deu"), loaded once and then shared.

    Args:
        engine: "tesseract", "rapidocr", or "auto": `DEFAULT_ENGINE` when available, else the other one.
        languages: Tesseract reads what its tessdata holds; RapidOCR's bundled models read "eng" and "chi_sim".

    Raises:
        InvalidInputError: An unknown engine (the message lists the known ones) or unsupported languages.
        MissingDependencyError: The engine's package or language data is missing (the message says what to
            install).
    """
    if engine == "auto":
        installed = available_engines()
        name = next((n for n in sorted(ENGINES, key=lambda n: n != DEFAULT_ENGINE) if n in installed), None)
        if name is None:
            raise MissingDependencyError("OCR needs tesserocr with Tesseract's English data (apt-get install "
                                         "tesseract-ocr-eng) or rapidocr_onnxruntime: pip install 'mm-rag[ocr]'")  # fmt: skip
    elif engine in ENGINES:
        name = engine
    else:
        raise InvalidInputError(f"unknown OCR engine {engine!r}; known: auto, {', '.join(ENGINES)}")
    spec = ENGINES[name]
    if not available(spec.module):
        raise MissingDependencyError(
            f"{spec.feature} needs the package {spec.module!r}, which is not installed: pip install 'mm-rag[ocr]'"
        )
    return shared_model(("ocr", name, languages), lambda: spec.build(languages))
