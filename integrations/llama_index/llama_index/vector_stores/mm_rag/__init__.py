"""mm-rag for LlamaIndex: `MMRagVectorStore`, a multimodal vector store over an mm-rag `MultimodalStore`."""

from llama_index.vector_stores.mm_rag._convert import NODE_KEY, node_to_record, record_to_node
from llama_index.vector_stores.mm_rag._filters import translate_filters
from llama_index.vector_stores.mm_rag.base import DEFAULT_SPACE, MMRagVectorStore
from llama_index.vector_stores.mm_rag.export import export_to

__all__ = [
    "DEFAULT_SPACE",
    "NODE_KEY",
    "MMRagVectorStore",
    "export_to",
    "node_to_record",
    "record_to_node",
    "translate_filters",
]
