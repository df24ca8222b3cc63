"""Ingest throughput of a mixed document folder, and the OCR engines called directly against through ingest.

Run from the repository root::

    .venv/bin/python benchmarks/bench_ingest_docs.py                # 4 copies of each kind, both OCR engines
    .venv/bin/python benchmarks/bench_ingest_docs.py --copies 8 --repeats 3

The folder holds what a document share holds: screenshots, scanned PDFs, PDF reports with figures, Word files
with pictures, slide decks, spreadsheets, CSV, Markdown, e-mail, notebooks and photos without text (the
example media and the test fixtures' builders make them). Each copy differs by one line, so no two files hash
alike. In one run, fresh processes are not needed (every variant loads the same models once, up front):

(a) ``ingest, no OCR``: `mm_rag.ingest` with all-MiniLM-L6-v2 (the packaged copy) and no OCR engine.
(b) ``ingest, OCR <engine>``: the same with each installed OCR engine.
(c) ``OCR <engine> direct``: the engine's ``read`` called on every picture that (b) reads — the image files,
    the pictures inside documents and the rendered scanned pages — one after the other, on one thread.

Reported: files/s and MB/s of each ingest, the seconds OCR adds to ingest ((b) - (a)) against the seconds of
the same OCR called directly (c): below 1.0, ingest's four worker threads hide OCR behind the rest. The
variants alternate over ``--repeats`` rounds; each keeps its best. Results: ``benchmarks/results/ingest_docs.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "tests", ROOT / "examples"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from fixtures import officegen, pdfgen

from mm_rag import MultimodalStore, TextEmbedder, ingest
from mm_rag.embed.documents import decorative, read_document
from mm_rag.embed.loading import packaged_models
from mm_rag.embed.media import load_image
from mm_rag.embed.ocr import available_engines, load_ocr

MEDIA = ROOT / "examples" / "media"


def build_folder(root: Path, copies: int) -> Path:
    """`copies` of each kind of file, each copy made distinct by one appended or changed line."""
    import make_media

    for copy in range(copies):
        folder = root / f"copy-{copy}"
        folder.mkdir(parents=True)
        shutil.copyfile(MEDIA / "images" / "invoice-screenshot.png", folder / "invoice.png")
        shutil.copyfile(MEDIA / "images" / "red-circle.jpg", folder / "photo.jpg")
        with (folder / "photo.jpg").open("ab") as photo:  # bytes after the JPEG's end: another hash, same pixels
            photo.write(f"copy {copy}".encode())
        make_media.scanned_letter(folder / "letter.pdf")
        with (folder / "letter.pdf").open("ab") as letter:
            letter.write(f"\n% copy {copy}\n".encode())
        pdfgen.write_report(folder / "report.pdf")
        with (folder / "report.pdf").open("ab") as report:
            report.write(f"\n% copy {copy}\n".encode())
        officegen.write_docx(folder / "report.docx")
        officegen.write_pptx(folder / "slides.pptx")
        officegen.write_xlsx(folder / "sheet.xlsx")
        officegen.write_notebook(folder / "notebook.ipynb")
        officegen.write_eml(folder / "mail.eml", (folder / "report.docx").read_bytes())
        rows = [["Item", "Amount"], *[[f"line {copy}-{n}", f"{n * 3.5:.2f}"] for n in range(50)]]
        officegen.write_csv(folder / "ledger.csv", rows)
        (folder / "notes.md").write_text(f"# Notes {copy}\n\nThe harbour festival runs for three days in July.\n")
    return root


def pictures_read_by_ocr(folder: Path) -> list:
    """Every picture ingest gives the OCR engine: image files, pictures inside documents, scanned pages."""
    from mm_rag.embed.sniff import sniff

    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        kind = sniff(path)
        if kind == "image":
            found.append(load_image(path))
        elif kind not in (None, "audio", "video"):
            for picture in read_document(path).pictures:
                image = load_image(picture.image)
                if picture.scan or not decorative(*image.size):
                    found.append(image)
    return found


def timed_ingest(folder: Path, text: TextEmbedder, ocr) -> tuple[float, int]:
    store = MultimodalStore()
    started = time.perf_counter()
    report = ingest(folder, store, text=text, ocr=ocr, save=False)
    seconds = time.perf_counter() - started
    store.close()
    if report.failed:
        raise SystemExit(f"benchmark folder has failures: {report.failed}")
    return seconds, report.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of each kind of file")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; each variant keeps its best")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ingest_docs.json")
    args = parser.parse_args()

    text = TextEmbedder(packaged_models()["text"], device="cpu").load()
    engines = {name: load_ocr(name) for name in available_engines()}
    with tempfile.TemporaryDirectory() as scratch:
        folder = build_folder(Path(scratch) / "share", args.copies)
        files = [path for path in folder.rglob("*") if path.is_file()]
        size = sum(path.stat().st_size for path in files)
        pictures = pictures_read_by_ocr(folder)
        timed_ingest(folder, text, None)  # warm-up: first-call costs of every reader and the model
        best: dict[str, float] = {}
        records: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, engine in [("ingest, no OCR", None), *((f"ingest, OCR {n}", e) for n, e in engines.items())]:
                seconds, records[name] = timed_ingest(folder, text, engine)
                best[name] = min(best.get(name, seconds), seconds)
            for name, engine in engines.items():
                started = time.perf_counter()
                for image in pictures:
                    engine.read(image)
                seconds = time.perf_counter() - started
                best[f"OCR {name} direct"] = min(best.get(f"OCR {name} direct", seconds), seconds)

    print(f"\n{len(files)} files ({size / 2**20:.1f} MiB), {len(pictures)} pictures for OCR; best of {args.repeats}")
    print("\n| variant | seconds | files/s | MiB/s | records |")
    print("|---|---|---|---|---|")
    for name, seconds in best.items():
        if name.startswith("ingest"):
            print(f"| {name} | {seconds:.2f} | {len(files) / seconds:.1f} | {size / 2**20 / seconds:.2f} | {records[name]} |")
    print("\n| engine | OCR direct, s (s/picture) | OCR's share of ingest, s | ingest share / direct |")
    print("|---|---|---|---|")
    ratios = {}
    for name in engines:
        direct, added = best[f"OCR {name} direct"], best[f"ingest, OCR {name}"] - best["ingest, no OCR"]
        ratios[name] = added / direct
        print(f"| {name} | {direct:.2f} ({direct / len(pictures):.3f}) | {added:.2f} | {ratios[name]:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "files": len(files), "bytes": size, "pictures": len(pictures), "best_seconds": best, "records": records,
        "ocr_in_ingest_over_direct": ratios, "machine": platform.platform(), "repeats": args.repeats,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
