"""``python -m mm_rag.cli``: the same as the `mm-rag` command."""

from mm_rag.cli import main

raise SystemExit(main())
