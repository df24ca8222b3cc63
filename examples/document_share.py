"""A document share as it really comes: a scanned letter, an invoice screenshot and a slide deck with a picture.

Ingests them with a text embedder and the default OCR engine (no CLIP needed), lists what was skipped or left
out, finds an invoice by its number (read by OCR inside the screenshot) and the site map inside the slides (by
its alt text), and builds the LLM context that carries the picture with its words.
Run: python examples/document_share.py [STORE_DIR]
"""

import sys
import tempfile
from pathlib import Path

from mm_rag import MultimodalStore, ingest
from mm_rag.context import build_context
from mm_rag.embed.loading import ModelChoice, load_models
from mm_rag.retrieval import MultimodalRetriever

MEDIA = Path(__file__).resolve().parent / "media"
FILES = [MEDIA / "docs" / "scanned-letter.pdf", MEDIA / "images" / "invoice-screenshot.png", MEDIA / "docs" / "festival-plan.pptx"]

# The text model and the OCR engine the command line would use (packaged copies when there is no model hub).
models = load_models(None, ModelChoice(clip=False, audio=False, ocr="auto"))
path = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="mm-rag-share-")
with MultimodalStore(path) as store:
    report = ingest(FILES, store, text=models.text, ocr=models.ocr)
    print(report.summary())
    for line in report.lines():  # skipped:/failed:/warning: path: reason
        print(line)

    [invoice] = store.search_text("INV-2024-0413", k=1)
    print(f"invoice: {Path(invoice.record.uri).name}, read by {invoice.record.metadata['ocr_engine']}")

    retriever = MultimodalRetriever(store, text=models.text, text_k=0, audio_k=0, video_k=0)
    [site_map] = retriever.retrieve("site map of the food stalls")[:1]
    record = site_map.record
    print(f"picture: slide {record.metadata['page']} of {Path(record.uri).name} ({record.metadata['picture']})")
    context = build_context([site_map])
    print(context.text.replace(str(MEDIA) + "/", ""))
    print(f"with {len(context.images)} picture(s) for the model: {context.images[0].mime_type}")
