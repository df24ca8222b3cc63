"""LlamaIndex nodes ↔ mm-rag records: one conversion function per direction.

A node becomes one `Record`:

- ``id`` is the node id, ``doc_id`` its ``ref_doc_id``, ``content_hash`` the node's hash;
- ``modality`` is ``"image"`` for image nodes (``uri`` their image path or URL), else ``"text"``;
- ``text`` is the node's text;
- ``metadata`` is the node's own metadata, unchanged and filterable, plus one reserved key, `NODE_KEY`, that
  holds every other field of the node (relationships, excluded keys, templates, image fields…) as a JSON
  object, so the node comes back exactly as it was added (without its embedding).

Records written by other means (``mm_rag.ingest``) have no `NODE_KEY`; they come back as `TextNode` or, for
images and video keyframes, `ImageNode`, with the record's metadata and its document as the source.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.schema import (
    BaseNode,
    Document,
    ImageDocument,
    ImageNode,
    IndexNode,
    Node,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)

from mm_rag import InvalidInputError, Record

NODE_KEY = "_llama_index_node"
"""The metadata key under which a record keeps the node's fields other than metadata, text and embedding."""

_NODE_CLASSES: dict[str, type[BaseNode]] = {
    cls.class_name(): cls for cls in (TextNode, ImageNode, IndexNode, Node, Document, ImageDocument)
}


def node_to_record(node: BaseNode) -> Record:
    """The record that stores `node` (its embedding travels separately, as the record's vector).

    Raises:
        InvalidInputError: the node's metadata uses the reserved key `NODE_KEY`.
    """
    fields = node.model_dump(mode="json")
    metadata: dict[str, Any] = fields.pop("metadata", None) or {}
    if NODE_KEY in metadata:
        raise InvalidInputError(f"node {node.node_id!r}: metadata key {NODE_KEY!r} is reserved by MMRagVectorStore")
    fields.pop("embedding", None)
    class_name = fields.pop("class_name", None) or node.class_name()
    text = fields.pop("text") if isinstance(fields.get("text"), str) else None
    envelope = {"class_name": class_name, "fields": fields, "text_in_record": text is not None}
    if text is None:  # a Document keeps its text in `text_resource`: store a readable copy in the record too
        readable = getattr(node, "text", None)
        text = readable if isinstance(readable, str) else None
    image = _image_location(node)
    return Record(
        id=node.node_id,
        modality="image" if image is not None else "text",
        text=text,
        uri=image or None,
        metadata={**metadata, NODE_KEY: envelope},
        doc_id=node.ref_doc_id,
        content_hash=node.hash,
    )


def record_to_node(record: Record) -> BaseNode:
    """The node stored in `record` (see `node_to_record`), or a new node made from a record of another origin."""
    metadata = dict(record.metadata)
    envelope = metadata.pop(NODE_KEY, None)
    if not isinstance(envelope, dict):
        return _foreign_node(record, metadata)
    node_class = _NODE_CLASSES.get(envelope.get("class_name"), TextNode)
    fields = dict(envelope.get("fields") or {})
    fields["metadata"] = metadata
    if envelope.get("text_in_record"):
        fields["text"] = record.text or ""
    return node_class.from_dict(fields)


def _image_location(node: BaseNode) -> str | None:
    """The image path or URL of an image node ("" for an image held inline); None when it is no image node."""
    if isinstance(node, ImageNode):
        return node.image_path or node.image_url or ""
    if isinstance(node, Document) and node.image_resource is not None:
        resource = node.image_resource
        return str(resource.path or resource.url or "")
    return None


def _foreign_node(record: Record, metadata: dict[str, Any]) -> BaseNode:
    relationships = {}
    if record.doc_id is not None:
        relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=record.doc_id)
    if record.modality in ("image", "video") and record.uri and not record.text:
        if record.modality == "image":
            return ImageNode(
                id_=record.id, text="", image_path=record.uri, metadata=metadata, relationships=relationships
            )
        metadata.setdefault("video_path", record.uri)  # a keyframe: the record points at the video itself
    return TextNode(id_=record.id, text=record.text or "", metadata=metadata, relationships=relationships)
