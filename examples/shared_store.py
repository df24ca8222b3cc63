"""Two processes share one store: a long-lived reader (think `mm-rag serve`) and a writer (think `mm-rag ingest`).

The reader keeps its handle open and simply searches; each search first checks whether another process
committed, and loads what changed. Writers take turns: a change takes the store's write lock (after loading the
latest commit) and `save()` hands it on. Vectors are random stand-ins for embedder output.
Run: python examples/shared_store.py [STORE_DIR]
"""

import multiprocessing
import sys
import tempfile

import numpy as np

from mm_rag import MultimodalStore, Record


def write_photos(path: str, names: list[str]) -> None:
    """A separate process: add some records and commit them."""
    rng = np.random.default_rng(len(names))
    with MultimodalStore(path) as store:
        store.add([Record(name, "image", uri=f"photos/{name}.jpg") for name in names], {"clip": rng.random((len(names), 16))})
        store.save()


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="mm-rag-shared-")
    with MultimodalStore(path) as store:  # the reader; it also creates the store
        store.create_space("clip", dim=16)
        store.save()
        print("reader sees", store.count(), "records")
        for batch in (["beach", "harbour"], ["forest"]):
            writer = multiprocessing.get_context("spawn").Process(target=write_photos, args=(path, batch))
            writer.start()
            writer.join()
            print("reader sees", store.count(), "records:", sorted(record.id for record in store))
        store.delete(["harbour"])  # the reader writes too, on top of the writer's commits
        store.save()
        print("generation", store.info()["generation"], "holds", sorted(record.id for record in store))
