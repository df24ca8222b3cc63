"""Ingestion: files and folders → decoded media → batched embeddings → store records."""

from mm_rag.ingestion.pipeline import IngestReport, ingest

__all__ = ["IngestReport", "ingest"]
