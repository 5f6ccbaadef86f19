"""The comparison report: a self-contained page that escapes everything it is given, survives missing
fields, is written atomically, and (in a real headless browser) runs nothing but its own filter."""
from __future__ import annotations

import copy
import io
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ragtune.evaluate.report import render_html, summary_table, write_report

EVIL = '<script>alert(1)</script> "quotes"'
EVIL_NAME = 'knn <script>alert(1)</script> "q"'
XSS_IMAGE = '<img src=x onerror="window.__xss=1">'


def interval(mean: float, half: float = 0.04, n: int = 180) -> dict:
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def classify_comparison() -> dict:
    finetune = {
        "name": "finetune", "family": "finetune", "status": "ok", "reason": None,
        "description": "MiniLM fine-tuned with a classification head",
        "split": "train 360 / validation 60 / test 180 (seeded split of reviews.jsonl)",
        "metrics": {"accuracy": interval(0.91), "macro_f1": interval(0.90)},
        "latency_ms": {"total": {"p50": 12.0, "p95": 30.5}, "embed": {"p50": 5.0, "p95": 9.0}},
        "tokens": {"in_mean": 40.2, "out_mean": 1.0}, "cost_per_1k_queries": 0.0,
        "one_time": {"training_seconds": 95.2, "index_seconds": None},
        "freshness": {"update": "new label 'mobile' + 60 examples", "absorb": "retrain", "absorb_seconds": 101.0,
                      "metric": "accuracy", "before": interval(0.30, 0.1, 60), "after": interval(0.85, 0.08, 60)},
        "forgetting": {"set": "general/pairs.jsonl", "metric": "mrr@10", "before": interval(0.80, 0.05, 100),
                       "after": interval(0.62, 0.07, 100)},
        "config": {"model": "all-MiniLM-L6-v2", "epochs": 3, "note": EVIL},
        "versions": {"ragtune": "0.1.0", "torch": "2.13.0"},
        "data": {"train": {"path": "reviews.jsonl", "sha256": "ab" * 32, "rows": 360}},
        "result_file": "results/finetune.json"}
    knn = {"name": EVIL_NAME, "family": "knn", "status": "ok", "split": finetune["split"],
           "metrics": {"accuracy": interval(0.84), "macro_f1": interval(0.82)},
           "latency_ms": {"total": {"p50": 3.1, "p95": 700.0}}, "cost_per_1k_queries": 0.0,
           "one_time": {"training_seconds": None, "index_seconds": 4.2},
           "freshness": {"absorb": "reindex", "absorb_seconds": 4.2, "metric": "accuracy",
                         "before": interval(0.31, 0.1, 60), "after": interval(0.80, 0.09, 60)}}
    zero_shot = {"name": "zero-shot", "family": "zero-shot", "status": "ok", "split": finetune["split"],
                 "metrics": {"accuracy": interval(0.55), "macro_f1": None}, "latency_ms": None,
                 "cost_per_1k_queries": None, "one_time": None, "freshness": None, "config": None}
    closed_book = {"name": "closed-book", "family": "closed-book", "status": "skipped",
                   "reason": "needs a generative model: set generator.backend to hf or openai"}
    return {
        "schema": "ragtune.comparison/1", "task": "classify", "project": "/tmp/kb", "created": "2026-11-30T23:50:00Z",
        "ragtune_version": "0.1.0", "primary_metric": "accuracy", "metrics_shown": ["accuracy", "macro_f1"],
        "constraints": {"latency_budget_ms": 500, "updates_per_month": 4},
        "strategies": [closed_book, zero_shot, knn, finetune],
        "ranking": ["finetune", EVIL_NAME, "zero-shot"], "best": "finetune", "runner_up": EVIL_NAME,
        "paired": {"a": "finetune", "b": EVIL_NAME, "metric": "accuracy", "difference": 0.07,
                   "ci95": [-0.01, 0.12], "p_value": 0.09, "tie": True, "n": 180},
        "recommendation": {"strategy": "finetune", "text": f"Fine-tune. {EVIL}",
                           "claims": [f"accuracy 0.910 vs 0.840 {XSS_IMAGE}"],
                           "would_change": ["If labels change weekly, then knn (re-index in seconds)."]},
        "forgetting_note": None,
        "disagreements": [
            {"id": "r0042", "input": f"the sync button {EVIL}", "gold": "sync",
             "predictions": {"finetune": "sync", EVIL_NAME: "editor", "zero-shot": "sync"},
             "correct": {"finetune": True, EVIL_NAME: False, "zero-shot": True}},
            {"id": "r0077", "gold": "billing", "predictions": {"finetune": "refund", EVIL_NAME: "billing"}}]}


def qa_comparison() -> dict:
    comparison = copy.deepcopy(classify_comparison())
    comparison.update(task="qa", primary_metric="f1", metrics_shown=["f1", "exact_match", "abstention_recall"],
                      forgetting_note="no strategy trains the embedder", ranking=None, best="rag")
    rag = {"name": "rag", "status": "ok", "metrics": {"f1": interval(0.71), "exact_match": interval(0.52)},
           "latency_ms": {"total": {"p50": 180.0, "p95": 420.0}, "retrieve": {"p50": 8.0, "p95": 15.0}},
           "cost_per_1k_queries": 0.0042, "one_time": {"index_seconds": 12.5},
           "freshness": {"absorb": "reindex", "absorb_seconds": 2.5, "metric": "f1", "before": interval(0.1),
                         "after": interval(0.66)}}
    closed = {"name": "closed-book", "status": "ok", "metrics": {"f1": interval(0.33)},
              "latency_ms": {"total": {"p50": 150.0, "p95": 300.0}}, "cost_per_1k_queries": 0.003}
    comparison["strategies"] = [rag, closed, {"name": "rag+sft", "status": "skipped", "reason": EVIL}]
    comparison["recommendation"]["strategy"] = "rag"
    comparison["disagreements"] = [{"id": "q1", "input": "Which port?", "gold": ["7741", "port 7741"],
                                    "predictions": {"rag": "7741", "closed-book": "8080"}}]
    return comparison


class Page(HTMLParser):
    """Collects what the checks need: script tags, src/href values, svg ids, text."""

    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self.scripts, self.links, self.svgs, self.text, self.classes = [], [], [], [], []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts.append(attrs)
        if tag == "svg":
            self.svgs.append(attrs.get("id"))
        self.links += [value for name, value in attrs.items() if name in ("src", "href") and value]
        self.classes.append((tag, attrs.get("class") or ""))

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.parametrize("make", [classify_comparison, qa_comparison])
def test_page_escapes_everything_and_stays_offline(make):
    comparison = make()
    source = render_html(comparison)
    page = Page(source)
    assert page.scripts == [{}], "only the one inline filter script, no src"
    assert source.count("<script>") == 1 and "&lt;script&gt;alert(1)&lt;/script&gt;" in source
    assert "&quot;quotes&quot;" in source and "<img" not in source and 'onerror="' not in source
    assert not [link for link in page.links if not link.startswith("#")], page.links
    assert "http://" not in source.replace("https://", "") and "https://" not in source
    text = " ".join(page.text)
    assert f"ragtune compare: {comparison['task']}" in text
    assert "tied within the noise" in text and "What would change the verdict" in text
    assert "★ recommended" in text and ("tr", "recommended") in page.classes
    for skipped in (s for s in comparison["strategies"] if s["status"] == "skipped"):
        assert skipped["reason"] in text  # the parser unescapes: the reason is shown as text
    assert {"chart-quality", "chart-cost", "chart-freshness"} <= set(page.svgs)
    if comparison["task"] == "classify":
        assert "chart-forgetting" in page.svgs
        assert "zero-shot (no p95 latency)" in text  # a missing point is named, not dropped silently
        assert "101 s (retrain)" in text and "4.2 s (re-index)" in text
        sections = [source.index(f'id="{name}"') for name in ("recommendation", "summary", "chart-quality",
                                                               "chart-cost", "chart-freshness", "chart-forgetting",
                                                               "details", "drill-down")]
        assert sections == sorted(sections)
    else:
        assert "chart-forgetting" not in page.svgs and "no strategy trains the embedder" in text


def test_minimal_and_malformed_comparisons_render():
    minimal = {"task": "qa", "strategies": [{"name": "closed-book", "status": "skipped", "reason": "no generator"}]}
    page = Page(render_html(minimal))
    assert page.scripts == [] and "no generator" in " ".join(page.text)
    for odd in ({}, None, {"strategies": [None, {"metrics": None, "latency_ms": {"total": None}}, {"name": 3}],
                           "paired": {"a": "x"}, "disagreements": [None, {"predictions": None}], "ranking": "x",
                           "constraints": None, "recommendation": None}):
        Page(render_html(odd))
        summary_table(odd)


def every_path(node, prefix=()):
    if isinstance(node, (dict, list)):
        for key, value in (node.items() if isinstance(node, dict) else enumerate(node)):
            yield prefix + (key,)
            yield from every_path(value, prefix + (key,))


def test_any_field_missing_or_of_the_wrong_type_renders():
    base = classify_comparison()
    for path in every_path(base):
        for bad in (None, "x", float("nan")):
            comparison = copy.deepcopy(base)
            parent = comparison
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = bad
            Page(render_html(comparison))
            summary_table(comparison)


def test_write_report_is_atomic_and_round_trips(tmp_path, monkeypatch):
    comparison = classify_comparison()
    path = write_report(comparison, tmp_path / "reports" / "compare.html")
    assert path == tmp_path / "reports" / "compare.html"
    assert path.read_text(encoding="utf-8") == render_html(comparison)
    assert [p.name for p in path.parent.iterdir()] == ["compare.html"]  # no temp file left behind

    import os

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(qa_comparison(), path)
    assert path.read_text(encoding="utf-8") == render_html(comparison)  # the old report is intact
    assert [p.name for p in path.parent.iterdir()] == ["compare.html"]


@pytest.mark.parametrize("make", [classify_comparison, qa_comparison])
def test_summary_table_has_a_row_per_strategy_that_ran_and_names_the_skipped_ones(make):
    from rich.console import Console

    comparison = make()
    table = summary_table(comparison)
    assert table.row_count == sum(s.get("status") == "ok" for s in comparison["strategies"])
    console = Console(record=True, width=240, file=io.StringIO())
    console.print(table)
    out = console.export_text()
    for strategy in comparison["strategies"]:
        assert strategy["name"] in out  # markup in a name is printed as text, not interpreted
    assert "★" in out and ("needs a generative model" in out or "<script>" in out)


# --- a real browser -------------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip("the browser test needs Debian's chromium and chromium-driver: apt-get install -y chromium "
                    "chromium-driver")
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


def no_alert(driver) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


@pytest.mark.server
def test_report_in_a_browser_runs_only_its_filter(browser, tmp_path):
    from selenium.webdriver.common.by import By

    path = write_report(classify_comparison(), tmp_path / "compare.html")
    browser.get(path.as_uri())
    assert no_alert(browser) and browser.execute_script("return window.__xss") is None
    assert browser.find_element(By.TAG_NAME, "h1").text == "ragtune compare: classify"
    assert EVIL_NAME in browser.find_element(By.CSS_SELECTOR, "table.summary").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#disagreements tbody tr")
    assert len(rows) == 2 and all(row.is_displayed() for row in rows)
    box = browser.find_element(By.ID, "filter")
    assert box.is_displayed()  # the script un-hides it; without JS it stays hidden
    box.send_keys("r0077")
    assert [row.is_displayed() for row in rows] == [False, True]
    assert "1 of 2" in browser.find_element(By.ID, "filter-count").text
    box.clear()
    box.send_keys("zzz-nothing")
    assert not any(row.is_displayed() for row in rows)
    box.clear()
    box.send_keys(" ")  # an input event with an empty query shows everything again
    assert all(row.is_displayed() for row in rows)
    assert no_alert(browser) and browser.execute_script("return window.__xss") is None
    shot = tmp_path / "ragtune-report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"\nscreenshot: {shot}")
