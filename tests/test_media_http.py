"""`GET /media/{record_id}` over a real uvicorn server on 127.0.0.1: a record's file with range requests, its
picture as a small JPEG, nothing outside the store's folder and the ingest root, the same key rule as the API."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fixtures.served import ServerThread
from PIL import Image

from mm_rag import MultimodalStore, Record, TextEmbedder
from mm_rag.server import create_app

API_KEY = "media-key"


@pytest.fixture(scope="module")
def text(minilm_dir: Path) -> TextEmbedder:
    return TextEmbedder(minilm_dir, device="cpu").load()


def wav(seconds: float, rate: int = 8000) -> bytes:
    """A mono 16-bit WAV of a tone (its header, then `seconds` of samples)."""
    import soundfile

    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture
def served(tmp_path: Path, text: TextEmbedder) -> Iterator[tuple[httpx.Client, MultimodalStore, Path]]:
    """A keyed client of a service whose store holds an audio file, a large picture, an HTML page and records
    pointing outside: at a file elsewhere, through a link out of the ingest root, at a file since removed."""
    root, outside = tmp_path / "shared", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "talk.wav").write_bytes(wav(3.0))
    Image.new("RGB", (1600, 900), (200, 40, 40)).save(root / "poster.png")
    (root / "page.html").write_text("<script>alert(1)</script>")
    (outside / "secret.txt").write_text("not for the web")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "gone.png").write_bytes(b"")
    store = MultimodalStore(tmp_path / "store")
    store.add(
        [
            Record("talk#0", "audio", text="a tone", uri=str(root / "talk.wav"), metadata={"start": 1.0, "end": 2.0}),
            Record("poster", "image", text="a red poster", uri=str(root / "poster.png")),
            Record("page", "text", text="a page", uri=str(root / "page.html")),
            Record("secret", "text", text="elsewhere", uri=str(outside / "secret.txt")),
            Record("linked", "text", text="through a link", uri=str(root / "link.txt")),
            Record("gone", "image", text="removed", uri=str(root / "gone.png")),
            Record("bare", "text", text="no file"),
        ]
    )
    store.save()
    (root / "gone.png").unlink()
    app = create_app(store, text=text, api_key=API_KEY, ingest_root=root)
    with ServerThread(app) as url, httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60) as client:
        yield client, store, root
    store.close()


def test_a_file_comes_whole_or_by_range_with_headers_that_run_nothing(served) -> None:
    client, _, root = served
    whole = client.get("/media/talk#0".replace("#", "%23"))
    assert whole.status_code == 200 and whole.content == (root / "talk.wav").read_bytes()
    assert whole.headers["content-type"] in ("audio/x-wav", "audio/wav") and whole.headers["accept-ranges"] == "bytes"
    assert (
        "sandbox" in whole.headers["content-security-policy"] and whole.headers["x-content-type-options"] == "nosniff"
    )
    part = client.get("/media/talk%230", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == (root / "talk.wav").read_bytes()[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{(root / 'talk.wav').stat().st_size}"
    page = client.get("/media/page")
    assert page.status_code == 200 and page.headers["content-disposition"].startswith("attachment")


def test_a_picture_comes_as_a_small_jpeg(served) -> None:
    client, _, _ = served
    answer = client.get("/media/poster", params={"thumb": 200})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(answer.content))
    assert picture.format == "JPEG" and max(picture.size) == 200 and picture.getpixel((100, 50))[0] > 150
    full = client.get("/media/poster")
    assert full.headers["content-type"] == "image/png" and full.headers["content-disposition"].startswith("inline")
    assert client.get("/media/talk%230", params={"thumb": 200}).status_code == 404  # audio shows no picture
    assert client.get("/media/poster", params={"thumb": 5000}).status_code == 422  # bounded


@pytest.mark.parametrize(
    ("record_id", "status"),
    [("nobody", 404), ("bare", 404), ("gone", 404), ("secret", 403), ("linked", 403), ("../../etc/passwd", 404)],
)
def test_nothing_outside_the_store_and_the_ingest_root_is_sent(served, record_id: str, status: int) -> None:
    client, _, _ = served
    answer = client.get(f"/media/{record_id}")
    assert answer.status_code == status, answer.text
    assert "not for the web" not in answer.text


def test_media_asks_for_the_key_as_every_endpoint_does(served) -> None:
    client, _, _ = served
    url = str(client.base_url)
    assert httpx.get(f"{url}/media/poster").status_code == 401
    assert httpx.get(f"{url}/media/poster", params={"api_key": API_KEY}).status_code == 401  # never in a URL
    assert httpx.get(f"{url}/media/poster", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_a_video_keyframe_and_a_document_picture_come_as_pictures(tmp_path: Path, text: TextEmbedder) -> None:
    """A keyframe's thumbnail is the frame shown at its time; a picture inside a PDF is rendered from it."""
    from fixtures.mediagen import Scene, write_pdf, write_video

    video = write_video(tmp_path / "clip.mp4", [Scene(0.0, (0, 0, 255)), Scene(2.0, (0, 200, 0))], 4.0)
    pdf = write_pdf(tmp_path / "page.pdf", [["A page without pictures."]])
    store = MultimodalStore(tmp_path / "store")
    store.add(
        [
            Record("frame@3", "video", text="a green scene", uri=str(video), metadata={"frame_time": 3.0}),
            Record("frame@1", "video", text="a blue scene", uri=str(video), metadata={"frame_time": 1.0}),
            Record("render", "image", text="the page", uri=str(pdf), metadata={"picture": "page=1"}),
        ]
    )
    store.save()
    with ServerThread(create_app(store, text=text, ingest_root=tmp_path)) as url:
        green = Image.open(io.BytesIO(httpx.get(f"{url}/media/frame@3", params={"thumb": 64}).content))
        blue = Image.open(io.BytesIO(httpx.get(f"{url}/media/frame@1", params={"thumb": 64}).content))
        red, g, b = green.convert("RGB").getpixel((2, 2))
        assert g > 150 and red < 80 and b < 80 and max(green.size) <= 64
        assert blue.convert("RGB").getpixel((2, 2))[2] > 150
        whole = httpx.get(f"{url}/media/frame@3")
        assert whole.headers["content-type"] == "video/mp4" and whole.content == video.read_bytes()
        page = httpx.get(f"{url}/media/render")
        assert (
            page.status_code == 200 and page.headers["content-type"] == "image/jpeg"
        )  # the page rendered, not the PDF
        assert Image.open(io.BytesIO(page.content)).size[0] > 100
    store.close()


def test_a_picture_that_cannot_be_decoded_is_a_422_naming_it(tmp_path: Path, text: TextEmbedder) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a picture" * 10)
    store = MultimodalStore(tmp_path / "store")
    store.add([Record("broken", "image", text="a broken picture", uri=str(broken))])
    store.save()
    with ServerThread(create_app(store, text=text, ingest_root=tmp_path)) as url:
        answer = httpx.get(f"{url}/media/broken", params={"thumb": 64})
        assert answer.status_code == 422 and "broken.png" in answer.json()["detail"]
        assert httpx.get(f"{url}/media/broken").status_code == 200  # the file itself is still sent as it is
    store.close()
