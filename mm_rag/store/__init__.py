"""The store layer: a SQLite catalog of records and one Faiss index per embedding space."""

from mm_rag.store.config import SpaceConfig
from mm_rag.store.store import MultimodalStore

__all__ = ["MultimodalStore", "SpaceConfig"]
