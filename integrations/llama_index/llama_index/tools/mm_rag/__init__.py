"""mm-rag for LlamaIndex: tools."""
