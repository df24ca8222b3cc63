"""Writing records' metadata as JSON: orjson (what `mm_rag.records.metadata_json` uses) against the standard
library, in one run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_metadata_json.py            # 100k records, best of 7

Each record's metadata is what ingestion writes for a transcript window or a PDF figure (numbers, a time range,
strings with non-ASCII letters, a short list; a tenth of them hold a null, which orjson's text cannot tell
from NaN, so those have their numbers checked). Versions, each encoding the whole batch:

- ``json per record``: ``json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode`` per record (the
  public standard-library way; it builds its C encoder again on every call);
- ``json C encoder per batch``: CPython's private ``_json.make_encoder`` built once per batch (what mm-rag used
  before; shown for comparison only);
- ``metadata_json`` (orjson, with json checking texts that hold ``null``), per record;
- ``encode_records``: the store's whole batch check and encode (types of every field, then ``metadata_json``).

Results go to ``benchmarks/results/metadata_json.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.before_after import write_results
from mm_rag.records import Record, encode_records, metadata_json


def metadata(i: int) -> dict:
    return {
        "page": i % 300,
        "start": i * 1.25,
        "end": i * 1.25 + 7.5,
        "mime_type": "audio/mpeg",
        "title": f"Réunion n° {i % 50}",
        "tags": ["meeting", f"t{i % 7}"],
        **({"speaker": None} if i % 10 == 0 else {}),  # a tenth of the records hold a null
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    batch = [metadata(i) for i in range(args.records)]
    records = [Record(f"r{i}", "audio", text="x", metadata=m) for i, m in enumerate(batch)]
    strict = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode

    def private_c_encoder() -> list[str]:
        from _json import make_encoder  # private: the code before, measured for comparison only

        encode = make_encoder(
            {}, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
        )
        return ["".join(encode(m, 0)) for m in batch]

    versions = {
        "json per record": lambda: [strict(m) for m in batch],
        "json C encoder per batch (private, before)": private_c_encoder,
        "metadata_json (orjson)": lambda: [metadata_json(m) for m in batch],
        "encode_records (checks + metadata_json)": lambda: encode_records(records),
    }
    best = {name: float("inf") for name in versions}
    for _ in range(args.repeats):  # interleaved: each version runs once per round
        for name, run in versions.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    assert [json.loads(t) for t in versions["metadata_json (orjson)"]()] == batch
    base = best["json per record"]
    print(f"\n| version ({args.records:,} records) | best of {args.repeats} | vs json per record |")
    print("|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.3f} s | {seconds / base:.2f}x |")
    write_results(ROOT / "benchmarks" / "results" / "metadata_json.json", {"records": args.records, "seconds": best})


if __name__ == "__main__":
    main()
