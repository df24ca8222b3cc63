"""The store benchmark's parts: `common` (data, timing, formatting, the shared `Bench` state), one module per
section of ``bench_store.py`` (`add`, `query`, `filtered`, `persist`, `mmap_1m`) and `targets`."""
