"""LangChain + mm-rag: images and text in one CLIP space, filtered and MMR search, search by image, an agent tool.

Draws a few coloured shapes, stores them with captioned notes in an `MMRagVectorStore`, searches them with text
and with an image, runs the multimodal retrieval tool an agent would call, then saves the store and reopens it, rebuilding the model from what the store recorded.
Nothing is downloaded: pass a local open_clip model (config JSON + checkpoint), or use weights already cached;
where no CLIP weights can load, the example says so in one line and goes on with the text model (notes only).
No LLM is called, so ``--fake`` (the switch every example takes for an offline run) changes nothing here.

Run: python examples/langchain_multimodal.py [--model CONFIG.json --pretrained WEIGHTS.safetensors] [--store DIR]
         [--fake]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path

from langchain_mm_rag import MMRagVectorStore, OpenCLIPEmbeddings, TextEmbeddings, create_multimodal_retriever_tool

from mm_rag import OpenCLIPEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/drawings.py, also when loaded by path
from drawings import COLOURS, draw
from embedders import load_embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture name or config JSON path")
    parser.add_argument("--pretrained", default="laion2b_s34b_b79k", help="pretrained tag or checkpoint path")
    parser.add_argument("--store", type=Path, help="where to save the store (default: a temporary folder)")
    parser.add_argument("--fake", action="store_true", help="accepted for uniformity: no LLM is called here")
    args = parser.parse_args()

    embedder = load_embedder(args.model, args.pretrained)
    pictures = isinstance(embedder, OpenCLIPEmbedder)  # without CLIP: the notes only, searched by the text model
    embedding = OpenCLIPEmbeddings(embedder) if pictures else TextEmbeddings(embedder)
    images = Path(tempfile.mkdtemp(prefix="mm-rag-shapes-"))
    shapes = [(colour, shape) for colour in COLOURS for shape in ("circle", "square")]
    paths = [draw(colour, shape, images / f"{colour}-{shape}.png") for colour, shape in shapes]

    store = MMRagVectorStore(embedding=embedding)  # a temporary store; its space is created on first add
    if pictures:
        store.add_images(paths, [{"colour": colour, "shape": shape} for colour, shape in shapes])
    store.add_texts(
        ["a note about a red circle", "a memo on blue squares", "minutes of the budget meeting"],
        [{"kind": "note", "source": name} for name in ("notes.txt", "memo.txt", "minutes.txt")],
    )

    if pictures:
        print("text → image:")
        for document, score in store.similarity_search_with_score("a red circle", k=3, filter={"modality": "image"}):
            print(f"  {score:+.3f}  {Path(document.metadata['uri']).name}")

    print("diverse (MMR) among everything but the notes:")
    for document in store.max_marginal_relevance_search("a blue square", k=3, filter={"kind": {"$neq": "note"}}):
        print(f"  {document.metadata.get('uri', document.page_content)}")

    if pictures:
        print("image → notes:")
        for document in store.similarity_search_by_image(paths[0], k=2, filter={"kind": "note"}):
            print(f"  {document.page_content!r} ({document.metadata['source']})")

    tool = create_multimodal_retriever_tool(store, k=3)
    message = tool.invoke({"type": "tool_call", "name": tool.name, "id": "call-1", "args": {"query": "a green circle"}})
    print("agent tool:", [block["type"] for block in message.content], f"+ {len(message.artifact)} documents")
    for block in message.content:
        if block["type"] == "text":
            print(textwrap.indent(block["text"], "  "))

    target = args.store or Path(tempfile.mkdtemp(prefix="mm-rag-langchain-")) / "store"
    store.save(target)
    reopened = MMRagVectorStore.load(target, device="cpu")  # the space recorded its model: rebuilt from it
    only = {"modality": "image"} if pictures else None
    again = reopened.similarity_search("a red circle", k=1, filter=only)[0]
    best = again.metadata["uri"] if pictures else repr(again.page_content)
    print(f"saved to {target}; reopened with {reopened.store.count()} records; best red circle: {best}")


if __name__ == "__main__":
    main()
