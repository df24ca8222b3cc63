"""LangChain integration of mm-rag."""
