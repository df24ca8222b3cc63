"""The search page of `mm-rag serve`, driven in a real browser: Debian's chromium through Selenium and Debian's
chromium-driver (no browser download), against a real uvicorn server on 127.0.0.1.

A query shows the expected hit; a picture's thumbnail really loads; an audio hit's player stands at the hit's
start; a shared URL runs its search when opened; a record holding HTML and script shows those characters and
runs nothing; with an API key the page asks for it, refuses a wrong one and works with the right one; the page
fits a phone's width and moves between results with the keyboard. Screenshots go to ``tests/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fixtures.served import ServerThread
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from mm_rag import MultimodalStore, Record, TextEmbedder
from mm_rag.server import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = Path(__file__).parent / "screenshots"
API_KEY = "page-key"
PAYLOAD = "payload <img src=x onerror=\"fetch('/xss-fired')\"> <script>document.title='pwned'</script> end"


@pytest.fixture(scope="module")
def text(minilm_dir: Path) -> TextEmbedder:
    return TextEmbedder(minilm_dir, device="cpu").load()


def wav(path: Path, seconds: float = 4.0, rate: int = 8000) -> None:
    import soundfile

    samples = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)
    soundfile.write(path, samples.astype(np.float32), rate, subtype="PCM_16")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, text: TextEmbedder) -> Iterator[MultimodalStore]:
    """A store of a passage, a picture, a moment of a recording and a record holding HTML and script."""
    root = tmp_path_factory.mktemp("ui")
    Image.new("RGB", (1200, 800), (220, 30, 30)).save(root / "poster.png")
    wav(root / "ferry.wav")
    store = MultimodalStore(root / "store")
    store.create_space("text", text.dim)
    records = [
        Record("pilot", "text", text="The harbour pilot boards each ship at the breakwater.", doc_id="notes.txt"),
        Record("poster", "image", text="A red poster of the harbour festival", uri=str(root / "poster.png")),
        Record("ferry#1", "audio", text="The harbour ferry leaves at noon from the eastern pier",
               uri=str(root / "ferry.wav"), doc_id=str(root / "ferry.wav"), metadata={"start": 1.5, "end": 3.0}),
        Record("xss", "text", text=PAYLOAD, doc_id="<img src=y onerror=alert(2)>.txt"),
    ]  # fmt: skip
    store.add(records, {"text": text.embed_texts([record.text for record in records])})
    store.save()
    yield store
    store.close()


def serve(store: MultimodalStore, text: TextEmbedder, api_key: str | None = None) -> tuple[ServerThread, list[str]]:
    """A server over `store` whose requested paths are recorded (to see that a payload fetched nothing)."""
    app = create_app(store, text=text, api_key=api_key, ingest_root=store.path.parent)
    requested: list[str] = []

    @app.middleware("http")
    async def record(request, call_next):  # type: ignore[no-untyped-def]
        requested.append(request.url.path)
        return await call_next(request)

    return ServerThread(app), requested


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    assert CHROMIUM and CHROMEDRIVER, "needs Debian's chromium and chromium-driver: scripts/setup installs them"
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,1000")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    SCREENSHOTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def wait_for(browser: webdriver.Chrome, condition, timeout: float = 20):  # type: ignore[no-untyped-def]
    return WebDriverWait(browser, timeout).until(lambda driver: condition(driver))


def results(browser: webdriver.Chrome) -> list[str]:
    return [item.get_attribute("data-id") for item in browser.find_elements(By.CSS_SELECTOR, "#results > li")]


def search(browser: webdriver.Chrome, query: str, mode: str = "lexical") -> None:
    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys(query)
    browser.find_element(By.CSS_SELECTOR, f"#mode option[value={mode}]").click()
    before = browser.find_element(By.ID, "status").text
    box.send_keys(Keys.ENTER)
    wait_for(browser, lambda d: d.find_element(By.ID, "status").text not in ("", before) or results(d))


def test_a_query_shows_its_hits_with_pictures_and_players_at_their_moment(store, text, browser) -> None:
    server, _ = serve(store, text)
    with server as url:
        browser.get(url)
        search(browser, "harbour")
        wait_for(browser, lambda d: {"pilot", "poster", "ferry#1"} <= set(results(d)))
        thumb = browser.find_element(By.CSS_SELECTOR, "li[data-id=poster] img.thumb")
        wait_for(
            browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb)
        )
        assert 0 < browser.execute_script("return arguments[0].naturalWidth", thumb) <= 320
        assert thumb.get_attribute("alt") == "A red poster of the harbour festival"
        marks = [mark.text for mark in browser.find_elements(By.CSS_SELECTOR, "li[data-id=pilot] mark")]
        assert marks == ["harbour"]
        audio = browser.find_element(By.CSS_SELECTOR, "li[data-id='ferry#1'] audio")
        wait_for(browser, lambda d: d.execute_script("return arguments[0].readyState", audio) >= 1)
        assert browser.execute_script("return arguments[0].currentTime", audio) == pytest.approx(1.5, abs=0.05)
        browser.execute_script("arguments[0].play()", audio)
        wait_for(browser, lambda d: d.execute_script("return arguments[0].paused", audio), timeout=15)
        assert browser.execute_script("return arguments[0].currentTime", audio) == pytest.approx(3.0, abs=0.5)
        where = browser.find_element(By.CSS_SELECTOR, "li[data-id='ferry#1'] .where").text
        assert "0:01.5–0:03.0" in where and "ferry.wav" in where
        browser.save_screenshot(str(SCREENSHOTS / "search.png"))
        # The keyboard moves between results.
        first = browser.find_element(By.CSS_SELECTOR, "#results > li")
        first.click()
        first.send_keys(Keys.ARROW_DOWN)
        assert browser.switch_to.active_element.get_attribute("data-id") == results(browser)[1]


def test_a_shared_url_runs_its_search(store, text, browser) -> None:
    server, _ = serve(store, text)
    with server as url:
        browser.get(f"{url}/?q=breakwater&mode=lexical&modality=text")
        wait_for(browser, lambda d: results(d) == ["pilot"])
        assert browser.find_element(By.ID, "q").get_attribute("value") == "breakwater"
        assert not browser.find_element(By.CSS_SELECTOR, "input[value=image]").is_selected()
        search(browser, "ferry noon")
        assert "q=ferry+noon" in browser.current_url and "mode=lexical" in browser.current_url


def test_html_and_script_in_a_record_stay_text(store, text, browser) -> None:
    server, requested = serve(store, text)
    with server as url:
        browser.get(url)
        title = browser.title
        search(browser, "payload")
        wait_for(browser, lambda d: "xss" in results(d))
        item = browser.find_element(By.CSS_SELECTOR, "li[data-id=xss]")
        assert "<img src=x" in item.text and "<script>" in item.text and "<img src=y onerror=alert(2)>.txt" in item.text
        assert not item.find_elements(By.CSS_SELECTOR, "img, script")
        time.sleep(0.5)
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018
        assert browser.title == title and "/xss-fired" not in requested
        browser.save_screenshot(str(SCREENSHOTS / "payload-as-text.png"))


def test_with_a_key_the_page_asks_refuses_a_wrong_one_and_works_with_the_right_one(store, text, browser) -> None:
    server, requested = serve(store, text, api_key=API_KEY)
    with server as url:
        browser.get(url)
        browser.execute_script("sessionStorage.clear()")
        browser.get(f"{url}/?q=poster&mode=lexical")
        key_box = wait_for(
            browser, lambda d: d.find_element(By.ID, "key") if d.find_element(By.ID, "key").is_displayed() else None
        )
        key_box.send_keys("wrong", Keys.ENTER)
        wait_for(browser, lambda d: "refused" in d.find_element(By.ID, "key-error").text)
        browser.save_screenshot(str(SCREENSHOTS / "key-refused.png"))
        key_box.clear()
        key_box.send_keys(API_KEY, Keys.ENTER)
        wait_for(browser, lambda d: "poster" in results(d))
        thumb = browser.find_element(By.CSS_SELECTOR, "li[data-id=poster] img.thumb")
        wait_for(
            browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb)
        )
        assert thumb.get_attribute("src").startswith("blob:")  # fetched with the key as a header
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        assert all(API_KEY not in path for path in requested) and API_KEY not in browser.current_url


def test_the_page_fits_a_phone_and_lists_documents(store, text, browser) -> None:
    server, _ = serve(store, text)
    with server as url:
        browser.set_window_size(390, 844)
        try:
            browser.get(f"{url}/?q=harbour&mode=lexical")
            wait_for(browser, lambda d: len(results(d)) >= 3)
            assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
            browser.save_screenshot(str(SCREENSHOTS / "phone.png"))
            browser.find_element(By.ID, "show-documents").click()
            wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#documents li"))
            listed = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#documents li")]
            assert any("notes.txt" in line for line in listed)
        finally:
            browser.set_window_size(1200, 1000)


def test_without_the_page_only_the_api_answers(store, text) -> None:
    import httpx

    app = create_app(store, text=text, ui=False)
    with ServerThread(app) as url:
        assert httpx.get(f"{url}/").status_code == 404
    with ServerThread(create_app(store, text=text)) as url:
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        assert "<script>" not in page.text.replace('<script src="/ui/ui.js" defer></script>', "")
        assert httpx.get(f"{url}/ui/ui.js").headers["content-type"].startswith("text/javascript")
        assert httpx.get(f"{url}/ui/../../pyproject.toml").status_code == 404


def test_a_picture_finds_its_kind_and_uploads_come_and_go(tmp_path, text, tiny_clip, browser) -> None:
    """A picture chosen in the page searches the CLIP space; a file uploaded through the page is stored, listed
    and deleted from the page."""
    from fixtures.tiny_clip import draw_shape

    store = MultimodalStore(tmp_path / "store")
    store.create_space(tiny_clip.space, tiny_clip.dim)
    shapes = [("red", "circle"), ("blue", "square"), ("green", "triangle")]
    pictures = []
    for colour, shape in shapes:
        path = tmp_path / f"{colour}-{shape}.png"
        draw_shape(colour, shape, size=96).save(path)
        pictures.append(Record(f"{colour}-{shape}", "image", text=f"a {colour} {shape}", uri=str(path)))
    store.add(pictures, {tiny_clip.space: tiny_clip.embed_images([record.uri for record in pictures])})
    store.save()
    query = tmp_path / "query.png"
    draw_shape("blue", "square", size=96, seed=7).save(query)
    note = tmp_path / "lighthouse.txt"
    note.write_text("The lighthouse keeper feeds the seagulls every morning.")
    with ServerThread(create_app(store, clip=tiny_clip, text=text)) as url:
        browser.get(url)
        browser.find_element(By.CSS_SELECTOR, "#more summary").click()
        browser.find_element(By.ID, "image").send_keys(str(query))
        browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
        wait_for(browser, lambda d: results(d))
        assert results(browser)[0] == "blue-square"
        browser.find_element(By.ID, "files").send_keys(str(note))
        browser.find_element(By.CSS_SELECTOR, "#upload-form button").click()
        wait_for(browser, lambda d: "records from 1 file" in d.find_element(By.ID, "upload-report").text)
        browser.find_element(By.ID, "show-documents").click()
        row = wait_for(browser, lambda d: next((li for li in d.find_elements(By.CSS_SELECTOR, "#documents li")
                                                 if "lighthouse.txt" in li.text), None))  # fmt: skip
        delete = row.find_element(By.TAG_NAME, "button")
        delete.click()
        assert delete.text == "Delete for good?"  # a second click deletes: no browser dialog
        delete.click()
        wait_for(
            browser,
            # read in one script: the list is rebuilt after the delete, so held elements may go stale
            lambda d: (
                "lighthouse.txt" not in d.execute_script("return document.getElementById('documents').textContent")
            ),
        )
        assert not [record for record in store.find() if "lighthouse" in (record.doc_id or "")]
    store.close()


def test_a_voice_clip_searches_by_what_it_says(store, text, whisper_ct2_dir, tmp_path, browser) -> None:
    from fixtures.mediagen import speech_wav

    from mm_rag import WhisperTranscriber

    transcriber = WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu", language="en")
    clip = speech_wav(tmp_path / "question.wav", "When does the ferry leave from the pier?")
    with ServerThread(create_app(store, text=text, transcriber=transcriber)) as url:
        browser.get(url)
        browser.find_element(By.CSS_SELECTOR, "#more summary").click()
        browser.find_element(By.CSS_SELECTOR, "#mode option[value=dense]").click()
        browser.find_element(By.ID, "audio").send_keys(str(clip))
        browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
        wait_for(browser, lambda d: results(d), timeout=60)
        assert results(browser)[0] == "ferry#1"
