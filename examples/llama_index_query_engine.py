"""LlamaIndex + mm-rag: a multimodal query engine that answers from retrieved pictures and passages.

Draws a few coloured shapes, indexes them with some notes in a `MultiModalVectorStoreIndex` on two
`MMRagVectorStore`s (text and images, one CLIP model), and asks a question through LlamaIndex's
`RetrieverQueryEngine` with ``multimodal=True``: the engine retrieves the best passages and images for the
question and sends them to the LLM as one chat message of text and image blocks.

Nothing is downloaded and no LLM service is called: the LLM is LlamaIndex's `MockLLM` as a chat model, which
answers by echoing its prompt (so the answer shows the context the engine built). Pass a real multimodal chat
LLM to `make_query_engine` instead, e.g. ``OpenAI(model="gpt-4o")`` from ``llama-index-llms-openai``; ``--fake``
(the switch every example takes for an offline run) names the mock explicitly. Where no CLIP weights can load,
the example says so in one line and answers from the notes alone, embedded by the text model.

Run: python examples/llama_index_query_engine.py [--model CONFIG.json --pretrained WEIGHTS.safetensors]
         [--question "..."] [--fake]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.response.schema import Response
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.llms import LLM
from llama_index.core.llms.mock import MockLLMWithChatMemoryOfLastCall
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import Document, ImageDocument, ImageNode
from llama_index.embeddings.mm_rag import OpenCLIPEmbedding, TextEmbedding
from llama_index.vector_stores.mm_rag import MMRagVectorStore

from mm_rag import OpenCLIPEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/drawings.py, also when loaded by path
from drawings import COLOURS, draw
from embedders import load_embedder

NOTES = [
    "The workshop door has a red circle painted on it, so visitors can find it.",
    "The sailing club's logo is a blue square on a white flag.",
    "Minutes of the budget meeting: the roof repair is postponed to spring.",
]
QUESTION = "Where is the red circle painted?"


def build_index(clip: OpenCLIPEmbedding, folder: Path) -> MultiModalVectorStoreIndex:
    """Drawings made in `folder` and the notes, in a multimodal index on two temporary mm-rag stores."""
    folder.mkdir(parents=True, exist_ok=True)
    documents: list[Document] = [
        ImageDocument(image_path=str(draw(colour, shape, folder / f"{colour}-{shape}.png")),
                      metadata={"colour": colour, "shape": shape})
        for colour in COLOURS
        for shape in ("circle", "square")
    ]  # fmt: skip
    documents += [Document(text=note, metadata={"kind": "note"}) for note in NOTES]
    context = StorageContext.from_defaults(vector_store=MMRagVectorStore(), image_store=MMRagVectorStore())
    return MultiModalVectorStoreIndex.from_documents(
        documents, storage_context=context, embed_model=clip, image_embed_model=clip
    )


def build_text_index(text: BaseEmbedding) -> VectorStoreIndex:
    """Without CLIP: the notes alone, in a `VectorStoreIndex` on a temporary mm-rag store."""
    context = StorageContext.from_defaults(vector_store=MMRagVectorStore())
    documents = [Document(text=note, metadata={"kind": "note"}) for note in NOTES]
    return VectorStoreIndex.from_documents(documents, storage_context=context, embed_model=text)


def make_query_engine(
    index: MultiModalVectorStoreIndex | VectorStoreIndex,
    llm: LLM,
    similarity_top_k: int = 1,
    image_similarity_top_k: int = 1,
) -> RetrieverQueryEngine:
    """A query engine that retrieves passages and images from `index` and gives both to `llm`, a chat LLM that
    takes image blocks (LlamaIndex's multimodal synthesis: ``multimodal=True``)."""
    if isinstance(index, MultiModalVectorStoreIndex):
        retriever = index.as_retriever(similarity_top_k=similarity_top_k, image_similarity_top_k=image_similarity_top_k)
    else:  # text only (no CLIP): the same engine, given passages alone
        retriever = index.as_retriever(similarity_top_k=similarity_top_k)
    return RetrieverQueryEngine.from_args(retriever, llm=llm, multimodal=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture name or config JSON path")
    parser.add_argument("--pretrained", default="laion2b_s34b_b79k", help="pretrained tag or checkpoint path")
    parser.add_argument("--question", default=QUESTION, help="what to ask")
    parser.add_argument("--fake", action="store_true", help="answer with LlamaIndex's MockLLM (the default here)")
    args = parser.parse_args()

    embedder = load_embedder(args.model, args.pretrained)
    llm = MockLLMWithChatMemoryOfLastCall(is_chat_model=True)  # echoes its prompt; records what it was sent
    with tempfile.TemporaryDirectory(prefix="mm-rag-query-engine-") as scratch:
        if isinstance(embedder, OpenCLIPEmbedder):
            index = build_index(OpenCLIPEmbedding(embedder), Path(scratch) / "shapes")
        else:
            index = build_text_index(TextEmbedding(embedder))
        engine = make_query_engine(index, llm)
        response = engine.query(args.question)
        report(args.question, response, llm)


def report(question: str, response: Response, llm: MockLLMWithChatMemoryOfLastCall) -> None:
    """Print the question, the sources the engine retrieved and what the LLM was sent."""
    print(f"Question: {question}")
    print("Sources:")
    for hit in response.source_nodes:
        what = Path(hit.node.image_path).name if isinstance(hit.node, ImageNode) else hit.node.get_content()
        print(f"  {hit.score:.3f}  {type(hit.node).__name__:9s} {what}")
    blocks = [block for message in llm.last_chat_messages or [] for block in message.blocks]
    kinds = [block.block_type for block in blocks]
    print(f"The LLM was sent {kinds.count('text')} text blocks and {kinds.count('image')} image(s).")
    print("Answer (the mock LLM echoes its prompt):")
    print(str(response))


if __name__ == "__main__":
    main()
