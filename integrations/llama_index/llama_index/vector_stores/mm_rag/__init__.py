"""mm-rag for LlamaIndex: vector_stores."""
