"""mm-rag for LlamaIndex: embeddings."""
