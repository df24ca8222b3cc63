"""The HTTP service (FastAPI): ``mm-rag serve`` runs it with uvicorn; `create_app` builds it in code.

Endpoints (schemas at ``/openapi.json``, interactive documentation at ``/docs``):

- ``POST /search`` — JSON ``{"query", "filter", "text_k", "image_k", "audio_k", "video_k", "mode", "fusion",
  "rrf_k", "min_score"}`` (``filter`` as an object or as JSON text) → results.
- ``POST /search/media`` — multipart form with an ``image`` and/or ``audio`` file (and optional ``query``,
  ``filter`` as JSON text, per-modality k, ``mode``, ``fusion``, ``rrf_k``, ``min_score``) → results.
- ``POST /ingest`` — multipart ``files`` (kept as ``uploads/<name>``: the name is the document; a form field
  ``doc_id`` names a single upload; a changed upload replaces its document, identical content is not stored
  twice), or JSON ``{"path": …}`` naming a file or folder inside the server's ingest root → the ingestion report.
- ``GET /documents`` — the documents (id, source, records, modalities, added); ``DELETE /documents/{doc_id}``
  removes one, its records and its uploaded file.
- ``GET /records/{id}``, ``DELETE /records/{id}`` — one record (404 when unknown); deleting a document's last
  record removes its uploaded file.
- ``GET /health`` — status, record count, spaces and models; open even when an API key is set.

Errors: 400 for malformed input (filters, queries), 401 without the API key, 403 for a path outside the
ingest root, 413 for a body over the limit, 422 for an upload that cannot be decoded or a body that does not
fit its schema.
"""

from mm_rag._optional import require

require("fastapi", "the HTTP service")  # one clear error naming the extra to install

from mm_rag.server.app import DEFAULT_MAX_UPLOAD_BYTES, app_from_store, create_app
from mm_rag.server.service import Service

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "Service", "app_from_store", "create_app"]
