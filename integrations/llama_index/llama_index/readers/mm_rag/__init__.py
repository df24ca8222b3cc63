"""mm-rag for LlamaIndex: readers."""
