"""Every example runs as the READMEs show it, on a machine like this one: no model hub, no CLIP weights.

Each example is started the documented way (``python examples/NAME.py --fake``) in a subprocess with
``HF_HUB_OFFLINE=1``. Where CLIP cannot load, it must say so in one ``note:`` line and go on with the text model
(the packaged all-MiniLM-L6-v2), never end in a traceback. The READMEs' Python blocks run in
`test_readme_snippets.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CLIP_NOTE = "note: CLIP cannot load here"


def offline_run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`args` run as a user would, offline (the model hub refused), with a clean exit expected."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def assert_ran(result: subprocess.CompletedProcess[str]) -> str:
    """The example's output, after checking that it ended well and said at most once why CLIP is missing."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith(CLIP_NOTE)]
    assert len(notes) <= 1, notes
    return result.stdout


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("langchain_rag_chain.py", "answer: A red circle marks a campsite"),
        ("langchain_agent.py", "ai: A red circle marks a campsite"),
        ("langchain_multimodal.py", "agent tool:"),
        ("llama_index_multimodal.py", "after reload:"),
        ("llama_index_query_engine.py", "Answer (the mock LLM echoes its prompt):"),
    ],
)
def test_framework_examples_run_as_documented(example: str, expected: str) -> None:
    """``python examples/X.py --fake``: the README command, with no CLIP weights to be found."""
    out = assert_ran(offline_run(sys.executable, str(EXAMPLES / example), "--fake"))
    assert expected in out
    if CLIP_NOTE in out:  # this machine: the reason is named, and the text part still found the legend/notes
        assert "going on with text only" in out


def test_rag_chain_without_clip_still_cites_the_legend() -> None:
    out = assert_ran(offline_run(sys.executable, str(EXAMPLES / "langchain_rag_chain.py"), "--fake"))
    assert "A red circle marks a campsite on the trail map." in out  # the passage reached the prompt
