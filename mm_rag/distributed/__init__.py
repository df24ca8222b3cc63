"""Distributed ingestion on Ray Data: files and object-store prefixes → embedding shards (`mm_rag.shards`).

`ingest_to_shards` runs the decode → embed pipeline of `mm_rag.ingest` on a pool of Ray actors, one model set
per actor, and writes the shards that `mm_rag.indexbuild.build_store` turns into a store. Ray and pyarrow are
imported only when it runs.
"""

from mm_rag.distributed.run import ShardReport, ingest_to_shards

__all__ = ["ShardReport", "ingest_to_shards"]
