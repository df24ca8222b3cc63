"""LlamaIndex + mm-rag: a MultiModalVectorStoreIndex on mm-rag stores, text → image search, persist and reload, a tool.

Draws a few coloured shapes, indexes them with a couple of notes (images in one `MMRagVectorStore`, text in
another, both embedded by one CLIP model), asks which pictures match a sentence, filters by metadata, saves the
index, loads it back and runs the search tool an agent would call. Nothing is downloaded: pass a local
open_clip model (config JSON + checkpoint), or use weights already cached.

Run: python examples/llama_index_multimodal.py [--model CONFIG.json --pretrained WEIGHTS.safetensors] [--persist DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.schema import Document, ImageDocument
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
from llama_index.embeddings.mm_rag import OpenCLIPEmbedding, TextEmbedding
from llama_index.retrievers.mm_rag import MMRagRetriever
from llama_index.tools.mm_rag import make_search_tool
from llama_index.vector_stores.mm_rag import MMRagVectorStore

from mm_rag import OpenCLIPEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/drawings.py, also when loaded by path
from drawings import COLOURS, draw
from embedders import load_embedder

NOTES = [
    Document(text="A note about the red circle on the workshop door.", metadata={"kind": "note"}),
    Document(text="Minutes of the budget meeting.", metadata={"kind": "minutes"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture name or config JSON path")
    parser.add_argument("--pretrained", default="laion2b_s34b_b79k", help="pretrained tag or checkpoint path")
    parser.add_argument("--persist", type=Path, help="where to persist the index (default: a temporary folder)")
    parser.add_argument("--fake", action="store_true", help="accepted for uniformity: no LLM is called here")
    args = parser.parse_args()

    embedder = load_embedder(args.model, args.pretrained)
    with tempfile.TemporaryDirectory(prefix="mm-rag-llama-index-") as scratch:
        if isinstance(embedder, OpenCLIPEmbedder):
            run(args, Path(scratch), OpenCLIPEmbedding(embedder))
        else:
            run_text_only(args, Path(scratch), TextEmbedding(embedder))


def run_text_only(args: argparse.Namespace, scratch: Path, text: BaseEmbedding) -> None:
    """Without CLIP: the notes in a `VectorStoreIndex` on an mm-rag store, searched, persisted, reloaded, a tool."""
    context = StorageContext.from_defaults(vector_store=MMRagVectorStore())
    index = VectorStoreIndex.from_documents(NOTES, storage_context=context, embed_model=text)
    print("Query: 'a red circle'")
    for hit in index.as_retriever(similarity_top_k=1).retrieve("a red circle"):
        print(f"  {hit.score:.3f}  {type(hit.node).__name__:9s} {hit.node.get_content()}")
    minutes = MetadataFilters(filters=[MetadataFilter(key="kind", value="minutes")])
    filtered = index.as_retriever(similarity_top_k=2, filters=minutes).retrieve("a red circle")
    print("Only minutes:", [hit.node.get_content() for hit in filtered])

    persist_dir = args.persist or scratch / "index"
    index.storage_context.persist(persist_dir=str(persist_dir))
    print("Persisted:", sorted(path.name for path in persist_dir.iterdir()))
    store = MMRagVectorStore.from_persist_dir(persist_dir, namespace="default")
    reloaded = load_index_from_storage(
        StorageContext.from_defaults(vector_store=store, persist_dir=str(persist_dir)), embed_model=text
    )
    tool = make_search_tool(MMRagRetriever(reloaded.vector_store, embed_model=text, similarity_top_k=1))
    print(f"Tool {tool.metadata.name!r} after reload:")
    print(tool.call(query="the budget").content)


def run(args: argparse.Namespace, scratch: Path, clip: OpenCLIPEmbedding) -> None:
    """Index drawings made in `scratch`, search, persist (to `args.persist` or `scratch`), reload, search again."""
    folder = scratch / "shapes"
    folder.mkdir()
    documents: list[Document] = [
        ImageDocument(image_path=str(draw(colour, shape, folder / f"{colour}-{shape}.png")),
                      metadata={"colour": colour, "shape": shape})
        for colour in COLOURS
        for shape in ("circle", "square")
    ]  # fmt: skip
    documents += NOTES

    # Two mm-rag stores: one for text nodes, one for image nodes (each a temporary store until persisted).
    context = StorageContext.from_defaults(vector_store=MMRagVectorStore(), image_store=MMRagVectorStore())
    index = MultiModalVectorStoreIndex.from_documents(
        documents, storage_context=context, embed_model=clip, image_embed_model=clip
    )

    retriever = index.as_retriever(similarity_top_k=1, image_similarity_top_k=2)
    print("Query: 'a red circle'")
    for hit in retriever.retrieve("a red circle"):
        what = getattr(hit.node, "image_path", None) or hit.node.get_content()
        print(f"  {hit.score:.3f}  {type(hit.node).__name__:9s} {what}")

    squares = MetadataFilters(filters=[MetadataFilter(key="shape", value="square")])
    filtered = index.as_retriever(image_similarity_top_k=2, filters=squares).text_to_image_retrieve("a red circle")
    print("Only squares:", [Path(hit.node.image_path).name for hit in filtered])

    persist_dir = args.persist or scratch / "index"
    index.storage_context.persist(persist_dir=str(persist_dir))
    print("Persisted:", sorted(path.name for path in persist_dir.iterdir()))

    reloaded_context = StorageContext.from_defaults(
        vector_store=MMRagVectorStore.from_persist_dir(persist_dir, namespace="default"),
        image_store=MMRagVectorStore.from_persist_dir(persist_dir, namespace="image"),
        persist_dir=str(persist_dir),
    )
    reloaded = load_index_from_storage(reloaded_context, embed_model=clip, image_embed_model=clip)

    tool = make_search_tool(MMRagRetriever.from_index(reloaded, similarity_top_k=1, image_similarity_top_k=2))
    print(f"Tool {tool.metadata.name!r} after reload:")
    print(tool.call(query="a blue square").content)


if __name__ == "__main__":
    main()
