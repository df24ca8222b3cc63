"""Quick start: a persistent multimodal store, filtered search, upsert and delete, save and reopen.

Vectors here are random stand-ins for embedder output (see mm_rag's embedders for real ones).
Run: python examples/store_quickstart.py [STORE_DIR]
"""

import sys
import tempfile

import numpy as np

from mm_rag import MultimodalStore, Record

path = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="mm-rag-example-")
rng = np.random.default_rng(0)

with MultimodalStore(path) as store:
    store.create_space("clip", dim=16)  # text and image vectors share this space
    store.create_space("text", dim=8, metric="cosine")  # a text-only embedder's space
    photo = Record("photo-1", "image", uri="photos/beach.jpg", metadata={"year": 2024, "tags": ["beach", "sun"]})
    chunk = Record("doc-1#0", "text", text="Our trip to the beach.", doc_id="doc-1", metadata={"year": 2024})
    clip = rng.standard_normal((2, 16))
    store.add([photo], {"clip": clip[:1]})
    store.add([chunk], {"clip": clip[1:], "text": rng.standard_normal((1, 8))})

    hits = store.search("clip", clip[0], k=5, filter={"tags": {"$contains": "beach"}})
    print([(hit.record.id, round(hit.score, 3)) for hit in hits])

    store.add(
        [Record("doc-1#0", "text", text="Our trip to the sea.", doc_id="doc-1")], {"text": rng.standard_normal((1, 8))}
    )
    print("after upsert:", store.get(["doc-1#0"])[0].text, "| clip vectors:", store.count("clip"))
    store.delete_doc("doc-1")
    store.save()

with MultimodalStore.open(path) as store:
    print("reopened:", store.count(), "record(s):", [record.id for record in store])
