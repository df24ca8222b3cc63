"""Every ```python block of the READMEs runs as written, offline, in a subprocess and a fresh folder.

The rule the READMEs follow, enforced here: every ```python block runs. A block runs alone, in a folder of its
own, unless the line before its fence is ``<!-- session: NAME -->``; the blocks of one file that name the same
session run in order in one process and one folder, like a doctest session, so a later one may use what an
earlier one made (`store`, `index`, `llm`, the ``shards/`` folder). Nothing else is defined for them: a block
that needs a chat model makes an offline one itself (LangChain's `FakeListChatModel`, LlamaIndex's `MockLLM`),
saying where the reader's own model goes.

Each folder starts with real files from ``examples/media`` under the names the blocks use (`WORKSPACE`). The
one change made to the code: this machine has no CLIP weights, so every CLIP construction, which the READMEs
write with the model named (``OpenCLIPEmbedder("ViT-B-32", "laion2b_s34b_b79k")`` and the integrations'
equivalents), loads the tiny CLIP of `fixtures.tiny_clip` instead, from its config JSON and checkpoint path
(a form the READMEs document). A construction written any other way fails the test, so a README cannot start
loading a hub model here unnoticed. Every other model is the one the block names, loaded offline from the
packages that ship it (all-MiniLM-L6-v2, Whisper tiny.en); the Ray block starts a local Ray of its own.

Tracebacks name the README and the line of the failing statement.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.tiny_clip import TinyClipFiles, tiny_clip_files

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "examples" / "media"
READMES = ("README.md", "integrations/langchain/README.md", "integrations/llama_index/README.md")

# Target in the fresh folder ← source under examples/media. docs/ holds the museum video too, for the
# blocks that show a transcriber reading a video beside documents.
WORKSPACE: dict[str, tuple[str, ...]] = {
    "photos": ("images",),
    "recordings": ("audio",),
    "docs": ("docs", "video"),
    "shared-drive": ("docs",),
    "query.jpg": ("images/yellow-cross.jpg",),
}
SPOKEN_QUESTION = ("question.wav", "audio/planning-meeting.ogg")  # the meeting, as a WAV file: a voice query

CLIP_CLASSES = {"OpenCLIPEmbedder", "OpenCLIPEmbeddings", "OpenCLIPEmbedding"}
HUB_CLIP = ("ViT-B-32", "laion2b_s34b_b79k")  # what the READMEs name: (architecture, pretrained tag)
SESSION = re.compile(r"<!-- session: ([\w-]+) -->")
FENCE = re.compile(r"^[ \t]*```(?P<info>.*)$")
PYTHON_FENCE = re.compile(r"^[ \t]*```python[ \t]*$", re.MULTILINE)
OTHER_PYTHON_FENCE = re.compile(r"^[ \t]*```[ \t]*(?!python[ \t]*$)(?:i?py\w*)\b.*$", re.MULTILINE)
SECONDS_PER_SESSION = 300

# Runs the blocks of one session in order, each compiled under its README's path with its line numbers, so a
# traceback points at the README line. The blocks come as JSON on stdin: nothing is written into the folder.
RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for path, first_line, code in json.load(sys.stdin):
    exec(compile("\\n" * (first_line - 1) + code, path, "exec"), namespace)
"""


@dataclass(frozen=True)
class Block:
    """One ```python block: its README, the line of its first code line, its code (dedented), its session."""

    readme: str
    line: int
    code: str
    session: str | None


def python_blocks(readme: str) -> list[Block]:
    """The ```python blocks of `readme`, in order; indented ones (inside list items) too."""
    lines = (ROOT / readme).read_text(encoding="utf-8").splitlines()
    blocks, number = [], 0
    while number < len(lines):
        opening = FENCE.match(lines[number])
        if opening is None:
            number += 1
            continue
        end = next(n for n in range(number + 1, len(lines)) if lines[n].strip() == "```")
        if opening["info"].strip() == "python":
            marker = SESSION.fullmatch(lines[number - 1].strip()) if number else None
            code = textwrap.dedent("\n".join(lines[number + 1 : end]) + "\n")
            blocks.append(Block(readme, number + 2, code, marker[1] if marker else None))
        number = end + 1
    return blocks


def sessions() -> list[list[Block]]:
    """Every block in a session: alone, or with the other blocks of its file that name the same session."""
    runs: list[list[Block]] = []
    named: dict[tuple[str, str], list[Block]] = {}
    for readme in READMES:
        for block in python_blocks(readme):
            if block.session is None:
                runs.append([block])
            elif (readme, block.session) in named:
                named[readme, block.session].append(block)
            else:
                runs.append(named.setdefault((readme, block.session), [block]))
    return runs


def session_id(blocks: list[Block]) -> str:
    """The README and the first code line of each block, e.g. ``README.md:372+396``: where to look."""
    return f"{blocks[0].readme}:" + "+".join(str(block.line) for block in blocks)


def with_tiny_clip(block: Block, tiny: TinyClipFiles) -> tuple[str, int]:
    """The block's code with every CLIP construction loading the tiny model instead; and how many there were.

    Only the two string literals naming the hub model are replaced, by the config JSON and checkpoint paths,
    so the line and the rest of the call stay as written.
    """
    replacements: list[tuple[ast.Constant, Path]] = []
    for node in ast.walk(ast.parse(block.code)):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name not in CLIP_CLASSES:
            continue
        named = [keyword.value for keyword in node.keywords if keyword.arg in {"model", "model_name", "pretrained"}]
        arguments = [*node.args, *named]
        written = tuple(getattr(argument, "value", None) for argument in arguments)
        assert written == HUB_CLIP, (
            f"{block.readme}:{block.line - 1 + node.lineno}: write {name}(...) with the model and its weights"
            f" named, {HUB_CLIP}, so that this test can load the tiny CLIP in their place"
        )
        replacements += [(arguments[0], tiny.config), (arguments[1], tiny.checkpoint)]
    lines = block.code.splitlines(keepends=True)
    for constant, path in sorted(replacements, key=lambda item: (item[0].lineno, item[0].col_offset), reverse=True):
        line = lines[constant.lineno - 1].encode()  # AST columns count UTF-8 bytes
        lines[constant.lineno - 1] = (
            line[: constant.col_offset] + repr(str(path)).encode() + line[constant.end_col_offset :]
        ).decode()
    return "".join(lines), len(replacements) // 2


def make_workspace(folder: Path) -> None:
    """The real example files under the names the blocks use (see `WORKSPACE`)."""
    import soundfile

    for target, sources in WORKSPACE.items():
        for source in sources:
            if (MEDIA / source).is_dir():
                shutil.copytree(MEDIA / source, folder / target, dirs_exist_ok=True)
            else:
                shutil.copyfile(MEDIA / source, folder / target)
    target, source = SPOKEN_QUESTION
    samples, rate = soundfile.read(MEDIA / source)
    soundfile.write(folder / target, samples, rate)


def test_every_python_block_is_found() -> None:
    """A block fenced as Python some other way (```py, ```python3…) would not run: it must be ```python."""
    for readme in READMES:
        text = (ROOT / readme).read_text(encoding="utf-8")
        assert not OTHER_PYTHON_FENCE.findall(text), f"{readme}: fence these as ```python so that they run"
        assert len(PYTHON_FENCE.findall(text)) == len(python_blocks(readme)), readme
    assert sum(len(blocks) for blocks in sessions()) >= 13


def test_every_session_has_several_blocks() -> None:
    """A session marker on one block alone is a typo or a leftover: a session is at least two blocks."""
    for blocks in sessions():
        if blocks[0].session is not None:
            assert len(blocks) > 1, f"{session_id(blocks)}: session {blocks[0].session!r} has one block"


def test_the_clip_constructions_are_all_replaced() -> None:
    """The substitution still matches what the READMEs write: each README builds CLIP, always by name."""
    tiny = TinyClipFiles(Path("config.json"), Path("weights.safetensors"), {})
    for readme in READMES:
        replaced = 0
        for block in python_blocks(readme):
            code, count = with_tiny_clip(block, tiny)
            assert all(f'"{name}"' not in code for name in HUB_CLIP), f"{readme}:{block.line}"
            replaced += count
        assert replaced >= 1, f"{readme}: no CLIP construction found to replace"


@pytest.mark.parametrize("construction", ["OpenCLIPEmbedder()", 'OpenCLIPEmbeddings(model="ViT-L-14")'])
def test_a_clip_construction_the_test_cannot_redirect_fails(construction: str) -> None:
    """A README block building CLIP without naming ViT-B-32 and its weights would load a model missing here."""
    block = Block("README.md", 10, f"import mm_rag\n\nclip = {construction}\n", None)
    tiny = TinyClipFiles(Path("config.json"), Path("weights.safetensors"), {})
    with pytest.raises(AssertionError, match=r"README\.md:12: write OpenCLIPEmbedd"):
        with_tiny_clip(block, tiny)


@pytest.mark.slow
@pytest.mark.timeout(SECONDS_PER_SESSION + 60)
@pytest.mark.parametrize("blocks", sessions(), ids=session_id)
def test_readme_block_runs(blocks: list[Block], tmp_path: Path) -> None:
    """The block (or session) runs to its end, offline, in a fresh folder holding the example media."""
    tiny = tiny_clip_files()
    folder = tmp_path / "work"
    folder.mkdir()
    make_workspace(folder)
    payload = [[str(ROOT / block.readme), block.line, with_tiny_clip(block, tiny)[0]] for block in blocks]
    # Ray keeps sockets under its temp folder, whose paths have a length limit: a short folder of its own.
    ray_temp = tempfile.mkdtemp(prefix="mmrag-ray-", dir="/tmp")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_TMPDIR=ray_temp)
    try:
        result = subprocess.run(
            [sys.executable, "-c", RUNNER],
            input=json.dumps(payload),
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=SECONDS_PER_SESSION,
            check=False,
        )
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert result.returncode == 0, f"{session_id(blocks)}:\n{result.stderr[-4000:]}"
