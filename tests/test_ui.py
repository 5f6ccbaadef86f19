"""The web UI in a real headless browser (Debian's chromium + chromium-driver, through Selenium):
enter a key, ask a question, check that the highlighted quote occurs in its source document,
and check that a document holding `<script>` is shown as text and runs nothing. A screenshot is
kept under the test's tmp folder (its path is printed)."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from ragtune.serve.auth import KeyStore
from tests.conftest import EXAMPLE_DOCS
from tests.test_serve import bearer, live_server, make_project, normalised

pytestmark = pytest.mark.server
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
    pytest.skip("the browser test needs Debian's chromium and chromium-driver: apt-get install -y chromium "
                "chromium-driver", allow_module_level=True)
QUESTION = "What port does the sync daemon listen on by default?"
SCRIPT_DOC = ("Canary zebraquartz notes. <script>alert(1)</script> <img src=x onerror=\"window.__xss=1\"> "
              "The zebraquartz relay keeps <b>bold</b> tags as plain text.")


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1400", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # no Selenium Manager download
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from ragtune.serve.app import create_app

    folder = tmp_path_factory.mktemp("ui") / "kb"
    project = make_project(folder)
    keys = KeyStore(folder, env="")
    secret, _ = keys.create([], write=True, name="ui")
    with live_server(create_app(project, keys=keys)) as url:
        yield SimpleNamespace(url=url, key=secret, folder=folder)
    project.close()


def wait_for(driver, css: str, timeout: float = 20):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css)))


def no_alert(driver) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_ask_search_upload_in_a_browser(browser, site, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By

    browser.get(site.url + "/")
    assert "Enter an API key" in wait_for(browser, "#key-state").text
    browser.find_element(By.ID, "key-input").send_keys(site.key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    assert "Key accepted" in wait_for(browser, "#key-state.ok").text
    assert browser.execute_script("return sessionStorage.getItem('ragtune-api-key')") == site.key
    assert browser.execute_script("return localStorage.length") == 0

    # Ask: the answer cites [n]; the cited source shows the quoted sentence highlighted.
    browser.find_element(By.ID, "ask-question").send_keys(QUESTION)
    browser.find_element(By.CSS_SELECTOR, "#ask-form button[type=submit]").click()
    wait_for(browser, ".turn[data-done=true]")
    answer = browser.find_element(By.CSS_SELECTOR, ".turn .answer")
    assert "7741" in answer.text and answer.find_elements(By.CSS_SELECTOR, "a.cite")
    answer.find_element(By.CSS_SELECTOR, "a.cite").click()
    cited = browser.find_elements(By.CSS_SELECTOR, ".source.cited")
    assert cited and cited[0].get_attribute("class").count("active") == 1
    for source in cited:
        quote = source.find_element(By.CSS_SELECTOR, "mark.quote").text
        doc_id = source.get_attribute("data-document-id")
        stored = httpx.get(f"{site.url}/documents/{doc_id}", headers=bearer(site.key)).json()
        assert normalised(quote) in normalised(" ".join(c["text"] for c in stored["chunks"]))
        on_disk = EXAMPLE_DOCS.parent / stored["source"]
        if on_disk.suffix in (".md", ".txt"):
            assert normalised(quote) in normalised(on_disk.read_text()), (quote, on_disk)

    # Upload a file holding markup through the page; it must come back as text, and run nothing.
    upload = tmp_path / "canary.txt"
    upload.write_text(SCRIPT_DOC)
    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=documents]").click()
    browser.find_element(By.ID, "upload-files").send_keys(str(upload))
    browser.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()
    wait_for(browser, "tr[data-document-id='canary.txt']")
    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=search]").click()
    browser.find_element(By.ID, "search-query").send_keys("zebraquartz relay")
    browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    hit = wait_for(browser, "li.hit[data-document-id='canary.txt'] .hit-text")
    assert "<script>alert(1)</script>" in hit.text and "<b>bold</b>" in hit.text
    results = browser.find_element(By.ID, "search-results")
    assert not results.find_elements(By.CSS_SELECTOR, "script, img, b")
    assert no_alert(browser) and browser.execute_script("return window.__xss") is None

    # The same text through the answer view.
    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=ask]").click()
    browser.find_element(By.ID, "ask-question").clear()
    browser.find_element(By.ID, "ask-question").send_keys("What does the zebraquartz relay keep?")
    browser.find_element(By.CSS_SELECTOR, "#ask-form button[type=submit]").click()
    wait_for(browser, "#turn-2[data-done=true]")
    sources = browser.find_element(By.CSS_SELECTOR, "#turn-2 .turn-sources")
    assert "<script>alert(1)</script>" in sources.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#conversation script, #conversation img, #conversation b")
    assert no_alert(browser) and browser.execute_script("return window.__xss") is None

    # Reports: none yet, said plainly.
    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=reports]").click()
    assert "no reports yet" in wait_for(browser, "#reports-status").text

    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=ask]").click()
    shot = tmp_path / "ragtune-ui.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"\nscreenshot: {shot}")


def test_the_page_is_locked_down(site):
    import httpx

    page = httpx.get(site.url + "/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text.replace('<script src="/ui/app.js" defer></script>', "")
    script = httpx.get(site.url + "/ui/app.js").text
    assert ".innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script
