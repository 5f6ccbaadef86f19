"""The comparison report: one self-contained HTML page and a terminal table, built from the dict
that `compare` writes (schema "ragtune.comparison/1").

- `render_html(comparison)`: the page, with inline CSS, inline SVG charts and one small inline
  script (the drill-down filter; the page reads the same without it). No external URL, font or
  image, so it opens offline from a file and under the server's sandboxing CSP.
- `write_report(comparison, path)`: the page written atomically, UTF-8.
- `summary_table(comparison)`: the same summary as a `rich` table for the terminal.

Every field may be missing or None; every string from the dict is escaped.

>>> page = render_html({"task": "classify", "strategies": [{"name": "knn", "status": "ok",
...     "metrics": {"accuracy": {"mean": 0.8, "ci95": [0.7, 0.9], "n": 50}}}]})
>>> page.startswith("<!doctype html>") and "ragtune compare: classify" in page
True
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

DASH = "–"
# Okabe-Ito: distinguishable under the common colour-vision deficiencies (yellow left out: too pale).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
BEFORE, AFTER, TRAIN, INDEX = "#E69F00", "#0072B2", "#0072B2", "#56B4E9"
ABSORB_WORDS = {"reindex": "re-index", "re-index": "re-index", "index": "re-index", "retrain": "retrain"}


# --- reading the dict: never trust a field's presence or type -------------------------------------
def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _text(value) -> str:
    """Any value as display text (escape it after)."""
    if value is None:
        return DASH
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return " | ".join(_text(v) for v in value)
    return json.dumps(value, default=str, ensure_ascii=False)


def _name(strategy: dict, position: int) -> str:
    name = strategy.get("name")
    return name if isinstance(name, str) and name else f"strategy {position + 1}"


def _is_ok(strategy: dict) -> bool:
    status = strategy.get("status")
    return status == "ok" or (status is None and bool(_dict(strategy.get("metrics"))))


def _interval(value) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) of {"mean", "ci95": [low, high]}; a bare number is a mean without interval."""
    if _num(value) is not None:
        return _num(value), None, None
    value = _dict(value)
    bounds = _list(value.get("ci95")) + [None, None]
    return _num(value.get("mean")), _num(bounds[0]), _num(bounds[1])


def _latency(strategy: dict, quantile: str, stage: str = "total") -> float | None:
    return _num(_dict(_dict(strategy.get("latency_ms")).get(stage)).get(quantile))


# --- formatting ----------------------------------------------------------------------------------
def fmt_metric(value) -> str:
    value = _num(value)
    return DASH if value is None else f"{value:.3f}"


def fmt_interval(value) -> str:
    mean, low, high = _interval(value)
    if mean is None:
        return DASH
    return fmt_metric(mean) if low is None or high is None else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def fmt_ms(value) -> str:
    value = _num(value)
    return DASH if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_seconds(value) -> str:
    value = _num(value)
    return DASH if value is None else f"{value:.1f}"


def fmt_duration(value) -> str:
    """Seconds as a person reads them: 4.2 s, 101 s, 12.5 min, 3.1 h."""
    value = _num(value)
    if value is None:
        return DASH
    if value < 10:
        return f"{value:.1f} s"
    if value < 600:
        return f"{value:.0f} s"
    return f"{value / 60:.1f} min" if value < 3 * 3600 else f"{value / 3600:.1f} h"


def fmt_cost(value) -> str:
    value = _num(value)
    if value is None:
        return DASH
    return f"{value:.2f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2g}"


def fmt_number(value) -> str:
    value = _num(value)
    if value is None:
        return DASH
    return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _absorb(freshness: dict) -> str:
    how = freshness.get("absorb")
    how = ABSORB_WORDS.get(how.lower(), how) if isinstance(how, str) else None
    seconds = fmt_duration(freshness.get("absorb_seconds"))
    return seconds if not how else f"{seconds} ({how})" if seconds != DASH else how


# --- the shape of the comparison ---------------------------------------------------------------------
def _strategies(comparison: dict) -> list[tuple[str, dict]]:
    """(name, strategy) in ranking order, unranked ones by the primary metric, skipped ones last."""
    named = [(_name(s, i), s) for i, s in enumerate(_list(comparison.get("strategies"))) if isinstance(s, dict)]
    ranking = [r for r in _list(comparison.get("ranking")) if isinstance(r, str)]
    rank = {name: i for i, name in enumerate(ranking)}
    primary = comparison.get("primary_metric")

    def score(strategy: dict) -> float:
        mean = _interval(_dict(strategy.get("metrics")).get(primary))[0] if isinstance(primary, str) else None
        return -mean if mean is not None else math.inf

    return sorted(named, key=lambda item: (not _is_ok(item[1]), rank.get(item[0], len(rank)), score(item[1])))


def _metrics(comparison: dict, strategies: list[tuple[str, dict]]) -> tuple[str | None, list[str]]:
    """The primary metric and the others shown beside it."""
    shown = [m for m in _list(comparison.get("metrics_shown")) if isinstance(m, str)]
    if not shown:
        shown = list(dict.fromkeys(m for _, s in strategies for m in _dict(s.get("metrics"))))
    primary = comparison.get("primary_metric")
    primary = primary if isinstance(primary, str) else (shown[0] if shown else None)
    return primary, [m for m in shown if m != primary]


def _task(comparison: dict) -> str:
    return _text(comparison["task"]) if comparison.get("task") else "comparison"


def _recommended(comparison: dict) -> str | None:
    name = _dict(comparison.get("recommendation")).get("strategy") or comparison.get("best")
    return name if isinstance(name, str) else None


def _colours(strategies: list[tuple[str, dict]]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, (name, _) in enumerate(strategies)}


def _tie_sentence(comparison: dict) -> str | None:
    paired = _dict(comparison.get("paired"))
    a, b = paired.get("a"), paired.get("b")
    if not (isinstance(a, str) and isinstance(b, str)):
        return None
    difference, low, high = _num(paired.get("difference")), *(_list(paired.get("ci95")) + [None, None])[:2]
    figures = f"{paired.get('metric') or 'difference'} {a} − {b} = {fmt_metric(difference)}"
    if _num(low) is not None and _num(high) is not None:
        figures += f" [{low:.3f}, {high:.3f}]"
    if _num(paired.get("p_value")) is not None:
        figures += f", p = {paired['p_value']:.2g}"
    if _num(paired.get("n")) is not None:
        figures += f", n = {paired['n']:.0f}"
    if paired.get("tie"):
        return f"The top two, {a} and {b}, are tied within the noise ({figures})."
    if difference is None:
        return f"{a} and {b} differ beyond the noise ({figures})."
    ahead, behind = (a, b) if difference >= 0 else (b, a)
    return f"{ahead} is ahead of {behind} beyond the noise ({figures})."


# --- the terminal table -----------------------------------------------------------------------------
def vs_best(comparison: dict, name: str) -> str:
    """'+0.034*' / '-0.012 tie': the paired difference of a strategy from the best one, starred when
    it lies beyond the noise (its 95% interval excludes 0)."""
    for test in _list(comparison.get("pairwise")):
        test = _dict(test)
        if test.get("b") == name and _num(test.get("difference")) is not None:
            return f"{-test['difference']:+.3f}" + (" tie" if test.get("tie") else "*")
    return DASH


def summary_table(comparison: dict) -> Table:
    """The summary as a rich Table, narrow enough for a terminal: one row per strategy that ran (the
    recommended one marked with ★), the skipped ones in the caption with their reasons."""
    from rich.table import Table
    from rich.text import Text

    comparison = _dict(comparison)
    strategies = _strategies(comparison)
    primary, others = _metrics(comparison, strategies)
    others = others[:2]
    recommended = _recommended(comparison)
    notes = [_tie_sentence(comparison) or ""]
    reasons: dict[str, list[str]] = {}
    for name, s in strategies:
        if not _is_ok(s):
            reasons.setdefault(f"{_text(s.get('status') or 'skipped')}: {_text(s.get('reason'))}", []).append(name)
    notes += [f"{', '.join(names)} {reason.split(':', 1)[0]}:{reason.split(':', 1)[1]}" for reason, names in reasons.items()]
    table = Table(title=Text(f"ragtune compare: {_task(comparison)}"), header_style="bold",
                  caption=Text("\n".join(n for n in notes if n), justify="left"))
    table.add_column("strategy", no_wrap=True)
    table.add_column(Text(f"{primary or 'metric'} [95% CI]"), justify="right", no_wrap=True)
    table.add_column("vs best", justify="right", no_wrap=True)
    for metric in others:
        table.add_column(Text(metric), justify="right")
    for column in ("p95 ms", "build s"):
        table.add_column(column, justify="right")
    table.add_column("update: absorb s, before → after")
    for name, strategy in strategies:
        if not _is_ok(strategy):
            continue
        label = Text(name + (" ★" if name == recommended else ""), style="bold" if name == recommended else "")
        scores, one_time = _dict(strategy.get("metrics")), _dict(strategy.get("one_time"))
        freshness = _dict(strategy.get("freshness"))
        fresh = DASH if not freshness else (
            f"{fmt_seconds(freshness.get('absorb_seconds'))} s: {fmt_metric(_interval(freshness.get('before'))[0])} → "
            f"{fmt_metric(_interval(freshness.get('after'))[0])}")
        build = one_time.get("training_seconds") if one_time.get("training_seconds") is not None else one_time.get("index_seconds")
        table.add_row(label, Text(fmt_interval(scores.get(primary))), vs_best(comparison, name),
                      *[Text(fmt_metric(_interval(scores.get(m))[0])) for m in others],
                      fmt_ms(_latency(strategy, "p95")), fmt_seconds(build), Text(fresh))
    return table


def _freshness_text(strategy: dict, separator: str) -> str:
    freshness = _dict(strategy.get("freshness"))
    if not freshness:
        return DASH
    before, after = _interval(freshness.get("before"))[0], _interval(freshness.get("after"))[0]
    return f"{_absorb(freshness)}{separator}{fmt_metric(before)} → {fmt_metric(after)}"


# --- SVG charts ---------------------------------------------------------------------------------------
def _step(span: float, count: int = 5) -> float:
    raw = span / count if span > 0 else 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * 0.999)


def _domain(values: list[float], unit: bool = False, zero: bool = False) -> tuple[float, float, list[float]]:
    """A padded axis range snapped to round ticks: (low, high, ticks)."""
    low, high = (0.0 if zero else min(values)), max(values)
    pad = (high - low) * 0.08 or max(abs(high) * 0.1, 0.05)
    low, high = (low if zero else low - pad), high + pad
    if unit and all(0 <= v <= 1 for v in values):
        low, high = max(low, 0.0), min(high, 1.0)
    step = _step(high - low)
    low, high = math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step
    return low, high, [round(low + i * step, 10) for i in range(round((high - low) / step) + 1)]


def _log_domain(values: list[float]) -> tuple[float, float, list[float]]:
    first, last = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    last = max(last, first + 1)
    steps = (1,) if last - first > 3 else (1, 2, 5)
    ticks = [m * 10.0 ** k for k in range(first, last) for m in steps] + [10.0 ** last]
    return 10.0 ** first, 10.0 ** last, ticks


def _scale(low: float, high: float, start: float, end: float, log: bool = False):
    if log:
        low, high = math.log10(low), math.log10(high)
    span = (high - low) or 1.0
    return lambda v: start + ((math.log10(v) if log else v) - low) / span * (end - start)


def _tick_labels(ticks: list[float], log: bool = False) -> list[str]:
    """Tick labels with as many decimals as the spacing needs (0.2 -> 1, 0.05 -> 2)."""
    if log or len(ticks) < 2:
        return [f"{t:g}" for t in ticks]
    decimals = max(0, -math.floor(math.log10(ticks[1] - ticks[0]) + 1e-9))
    return [f"{t:.{decimals}f}" for t in ticks]


def _svg(chart_id: str, title: str, width: int, height: int, body: list[str]) -> str:
    return (f'<svg id="{chart_id}" class="chart" viewBox="0 0 {width} {height}" width="{width}" role="img" '
            f'aria-labelledby="{chart_id}-title"><title id="{chart_id}-title">{escape(title)}</title>'
            + "".join(body) + "</svg>")


def _x_axis(body: list[str], ticks, x, top: float, bottom: float, label: str, centre: float, log=False) -> None:
    for t, text in zip(ticks, _tick_labels(ticks, log)):
        body.append(f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{bottom}"/>'
                    f'<text class="tick" x="{x(t):.1f}" y="{bottom + 15}" text-anchor="middle">{text}</text>')
    body.append(f'<text class="axis" x="{centre:.0f}" y="{bottom + 34}" text-anchor="middle">{escape(label)}</text>')


def _row_label(name: str, x: float, y: float) -> str:
    """A strategy name right-aligned at (x, y), cut to fit the label column (the full name on hover)."""
    short = name if len(name) <= 24 else name[:23] + "…"
    return f'<text class="label" x="{x:.1f}" y="{y:.1f}" text-anchor="end"><title>{escape(name)}</title>' \
           f'{escape(short)}</text>'


def _note(missing: list[str]) -> str:
    return f'<p class="note">Not plotted: {escape("; ".join(missing))}.</p>' if missing else ""


def quality_latency_chart(comparison: dict, strategies, primary: str | None) -> str:
    """Scatter of p95 latency against the primary metric with its interval; the budget as a dashed line."""
    points, missing = [], []
    for name, s in strategies:
        mean, low, high = _interval(_dict(s.get("metrics")).get(primary))
        p95 = _latency(s, "p95")
        if mean is None or p95 is None or p95 <= 0:
            missing.append(f"{name} (no {'p95 latency' if mean is not None else primary or 'metric'})")
        else:
            points.append((name, p95, mean, low if low is not None else mean, high if high is not None else mean))
    budget = _num(_dict(comparison.get("constraints")).get("latency_budget_ms"))
    width, height, left, right, top, bottom = 720, 380, 64, 700, 24, 326
    caption = f"{primary or 'quality'} against p95 latency (higher and further left is better)"
    if not points:
        return f'<figure><figcaption>{escape(caption)}</figcaption><p class="note">No strategy has both ' \
               f'{escape(primary or "a metric")} and a latency.</p>{_note(missing)}</figure>'
    xs = [p[1] for p in points] + ([budget] if budget and budget > 0 else [])
    log = max(xs) / min(xs) > 20
    x_low, x_high, x_ticks = _log_domain(xs) if log else _domain(xs, zero=True)
    y_low, y_high, y_ticks = _domain([v for p in points for v in p[2:]], unit=True)
    x, y = _scale(x_low, x_high, left, right, log), _scale(y_low, y_high, bottom, top)
    body = []
    if budget and budget > 0:
        bx = x(budget)
        body.append(f'<rect class="over" x="{bx:.1f}" y="{top}" width="{right - bx:.1f}" height="{bottom - top}"/>'
                    f'<line class="budget" x1="{bx:.1f}" x2="{bx:.1f}" y1="{top}" y2="{bottom}"/>'
                    f'<text class="tick" x="{bx - 4:.1f}" y="{top + 12}" text-anchor="end">'
                    f'latency budget {fmt_ms(budget)} ms</text>')
    for t, text in zip(y_ticks, _tick_labels(y_ticks)):
        body.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>'
                    f'<text class="tick" x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{text}</text>')
    _x_axis(body, x_ticks, x, top, bottom, f"p95 latency, ms{' (log scale)' if log else ''}", (left + right) / 2,
            log)
    body.append(f'<text class="axis" transform="translate(16 {(top + bottom) / 2:.0f}) rotate(-90)" '
                f'text-anchor="middle">{escape(primary or "metric")} (mean, 95% CI)</text>')
    colours, recommended, placed = _colours(strategies), _recommended(comparison), []
    for name, p95, mean, low, high in sorted(points, key=lambda p: -p[2]):
        px, py, colour = x(p95), y(mean), colours[name]
        ring = ' class="recommended"' if name == recommended else ""
        body.append(f'<g><title>{escape(name)}: {mean:.3f} [{low:.3f}, {high:.3f}], p95 {fmt_ms(p95)} ms</title>'
                    f'<line stroke="{colour}" class="ci" x1="{px:.1f}" x2="{px:.1f}" '
                    f'y1="{y(low):.1f}" y2="{y(high):.1f}"/>'
                    f'<circle{ring} cx="{px:.1f}" cy="{py:.1f}" r="{7 if ring else 5}" fill="{colour}"/></g>')
        label = name + (" ★" if ring else "")
        size = 6.6 * len(label) + 4
        lx, anchor = (px + 10, "start") if px + 10 + size < width else (px - 10, "end")
        x0 = lx if anchor == "start" else lx - size
        ly = py + 4
        while any(abs(ly - oy) < 14 and x0 < ox1 and x0 + size > ox0 for ox0, ox1, oy in placed):
            ly += 14
        placed.append((x0, x0 + size, ly))
        body.append(f'<text class="label" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}">{escape(label)}</text>')
    chart = _svg("chart-quality", caption, width, height, body)
    return f"<figure>{chart}<figcaption>{escape(caption)}</figcaption>{_note(missing)}</figure>"


def cost_chart(strategies) -> str:
    """Horizontal bars: cost per 1k queries, and one-time training + index seconds."""
    rows = [(n, _num(s.get("cost_per_1k_queries")), _num(_dict(s.get("one_time")).get("training_seconds")),
             _num(_dict(s.get("one_time")).get("index_seconds"))) for n, s in strategies]
    caption = "Running cost per 1k queries, and the one-time cost to build (training + index, seconds)"
    if not rows:
        return f'<figure><figcaption>{escape(caption)}</figcaption><p class="note">No strategy ran.</p></figure>'
    row_height, label_width, panel, gap, top = 30, 170, 230, 60, 48
    width, height = label_width + 2 * panel + gap + 170, top + row_height * len(rows) + 10
    max_cost = max([r[1] or 0 for r in rows]) or 1.0
    max_seconds = max([(r[2] or 0) + (r[3] or 0) for r in rows]) or 1.0
    second = label_width + panel + gap
    body = [f'<text class="axis" x="{label_width}" y="16">cost per 1k queries</text>',
            f'<text class="axis" x="{second}" y="16">one-time, seconds</text>',
            f'<rect x="{second}" y="24" width="10" height="10" fill="{TRAIN}"/>'
            f'<text class="tick" x="{second + 14}" y="33">training</text>'
            f'<rect x="{second + 72}" y="24" width="10" height="10" fill="{INDEX}"/>'
            f'<text class="tick" x="{second + 86}" y="33">index</text>']
    missing = []
    for i, (name, cost, train, index) in enumerate(rows):
        y = top + i * row_height
        body.append(_row_label(name, label_width - 10, y + 14))
        w = max(cost or 0, 0) / max_cost * panel
        body.append(f'<rect x="{label_width}" y="{y + 2}" width="{w:.1f}" height="16" fill="#666"/>'
                    f'<text class="tick" x="{label_width + w + 5:.1f}" y="{y + 14}">{fmt_cost(cost)}</text>')
        w_train, w_index = (max(train or 0, 0) / max_seconds * panel, max(index or 0, 0) / max_seconds * panel)
        body.append(f'<rect x="{second}" y="{y + 2}" width="{w_train:.1f}" height="16" fill="{TRAIN}"/>'
                    f'<rect x="{second + w_train:.1f}" y="{y + 2}" width="{w_index:.1f}" height="16" fill="{INDEX}"/>')
        parts = [f"{fmt_duration(train)} train" if train is not None else "",
                 f"{fmt_duration(index)} index" if index is not None else ""]
        body.append(f'<text class="tick" x="{second + w_train + w_index + 5:.1f}" y="{y + 14}">'
                    f'{escape(" + ".join(p for p in parts if p) or DASH)}</text>')
        if cost is None:
            missing.append(f"{name} (no cost)")
    body.append(f'<line class="axisline" x1="{label_width}" x2="{label_width}" y1="{top - 4}" y2="{height - 6}"/>'
                f'<line class="axisline" x1="{second}" x2="{second}" y1="{top - 4}" y2="{height - 6}"/>')
    chart = _svg("chart-cost", caption, width, height, body)
    return f"<figure>{chart}<figcaption>{escape(caption)}</figcaption>{_note(missing)}</figure>"


def dumbbell_chart(chart_id: str, caption: str, rows: list[tuple[str, object, object, str]], metric: str) -> str:
    """Before (open) and after (filled) per strategy with intervals; `rows`: (name, before, after, label)."""
    points, missing = [], []
    for name, before, after, label in rows:
        b, a = _interval(before), _interval(after)
        if b[0] is None and a[0] is None:
            missing.append(f"{name} (no before/after figures)")
        else:
            points.append((name, b, a, label))
    if not points:
        return f'<figure><figcaption>{escape(caption)}</figcaption>{_note(missing)}</figure>'
    row_height, left, right, top = 34, 170, 560, 40
    width, height = right + 230, top + row_height * len(points) + 44
    values = [v for _, b, a, _ in points for v in (*b, *a) if v is not None]
    low, high, ticks = _domain(values, unit=True)
    x, bottom = _scale(low, high, left, right), top + row_height * len(points)
    body = [f'<circle cx="{left + 6}" cy="14" r="5" class="before"/>'
            f'<text class="tick" x="{left + 16}" y="18">before</text>'
            f'<circle cx="{left + 76}" cy="14" r="5" fill="{AFTER}"/>'
            f'<text class="tick" x="{left + 86}" y="18">after</text>']
    _x_axis(body, ticks, x, top - 6, bottom, f"{metric} (mean, 95% CI)", (left + right) / 2)
    for i, (name, (b, bl, bh), (a, al, ah), label) in enumerate(points):
        y = top + i * row_height + row_height / 2
        body.append(_row_label(name, left - 10, y + 4))
        if b is not None and a is not None:
            body.append(f'<line class="link" x1="{x(b):.1f}" x2="{x(a):.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
        for mean, lo, hi, dy, colour, cls in ((b, bl, bh, -5, BEFORE, ' class="before"'), (a, al, ah, 5, AFTER, "")):
            if mean is None:
                continue
            if lo is not None and hi is not None:
                body.append(f'<line class="ci" stroke="{colour}" x1="{x(lo):.1f}" x2="{x(hi):.1f}" '
                            f'y1="{y + dy:.1f}" y2="{y + dy:.1f}"/>')
            body.append(f'<circle{cls} cx="{x(mean):.1f}" cy="{y:.1f}" r="6" fill="{colour}">'
                        f'<title>{"before" if cls else "after"} '
                        f'{mean:.3f}</title></circle>')
        change = f"{a - b:+.3f}".replace("-", "−") if a is not None and b is not None else ""
        text = " · ".join(part for part in (label, change) if part)
        body.append(f'<text class="tick" x="{right + 14}" y="{y + 4:.1f}">{escape(text)}</text>')
    chart = _svg(chart_id, caption, width, height, body)
    return f"<figure>{chart}<figcaption>{escape(caption)}</figcaption>{_note(missing)}</figure>"


# --- the page ---------------------------------------------------------------------------------------------
CSS = """
:root { --fg: #1d232a; --muted: #5f6b76; --line: #d8dde2; --soft: #f4f6f8; --accent: #0072B2; --good: #009E73;
        --bad: #D55E00; color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: #fff; }
main { max-width: 1120px; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; letter-spacing: -.01em; }
h2 { font-size: 1.15rem; margin: 2.2rem 0 .6rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); }
h3 { font-size: .95rem; margin: 1rem 0 .3rem; }
nav { margin: .6rem 0 0; font-size: .9em; } nav a { color: var(--accent); margin-right: 1rem; text-decoration: none; }
.meta, .muted, .note, figcaption { color: var(--muted); font-size: .9em; }
.note { font-style: italic; margin: .3rem 0; }
.verdict { border: 1px solid var(--line); border-left: 5px solid var(--accent); background: var(--soft);
           border-radius: 6px; padding: .9rem 1.2rem; margin: 1.2rem 0; }
.verdict p { margin: .2rem 0 .6rem; font-size: 1.05em; } .verdict ul { margin: .2rem 0 .6rem; padding-left: 1.3rem; }
.tie { font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; font-size: .93em; }
th, td { text-align: left; padding: .35rem .55rem; border-bottom: 1px solid var(--line); vertical-align: top;
         overflow-wrap: anywhere; }
th { background: var(--soft); font-weight: 600; }
td.fresh { min-width: 13em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.recommended td { background: #e8f3fa; } tr.recommended td:first-child { box-shadow: inset 4px 0 var(--accent); }
tr.skipped td { color: var(--muted); }
.badge { display: inline-block; font-size: .75em; font-weight: 600; padding: 0 .45em; border-radius: 9px;
         background: var(--accent); color: #fff; margin-left: .35em; white-space: nowrap; }
.badge.top { background: #fff; color: var(--accent); border: 1px solid var(--accent); }
.over { color: var(--bad); font-weight: 600; }
figure { margin: 1rem 0 1.6rem; } svg.chart { max-width: 100%; height: auto; display: block; }
.chart text { font: 12px system-ui, sans-serif; fill: #2b3036; } .chart .axis { font-weight: 600; }
.chart .tick { fill: #4a535c; } .chart .grid { stroke: #e6e9ec; } .chart .axisline { stroke: #9aa3ab; }
.chart .ci { stroke-width: 2; } .chart .link { stroke: #9aa3ab; stroke-width: 2; }
.chart circle.recommended { stroke: #000; stroke-width: 2; }
.chart circle.before { fill: #fff; stroke: #E69F00; stroke-width: 2.5; }
.chart rect.over { fill: #f5f0eb; } .chart .budget { stroke: #D55E00; stroke-width: 1.5; stroke-dasharray: 5 4; }
details { border: 1px solid var(--line); border-radius: 6px; padding: .4rem .9rem; margin: .5rem 0; }
summary { cursor: pointer; font-weight: 600; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--soft); padding: .6rem; border-radius: 4px;
      font-size: .85em; max-height: 28rem; overflow: auto; }
code, .id { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88em; }
td.ok { color: #006b4f; } td.bad { color: #b33f00; background: #fdf1ea; }
.example { max-height: 7.5em; overflow: auto; }
#filter { font: inherit; padding: .35rem .55rem; width: min(26rem, 100%); border: 1px solid var(--line);
          border-radius: 4px; margin: .3rem 0; }
"""

FILTER_SCRIPT = """(function () {
  var box = document.getElementById("filter"), count = document.getElementById("filter-count");
  var rows = document.querySelectorAll("#disagreements tbody tr");
  box.hidden = false;
  box.addEventListener("input", function () {
    var query = box.value.toLowerCase().trim(), shown = 0;
    rows.forEach(function (row) {
      var match = !query || row.textContent.toLowerCase().indexOf(query) >= 0;
      row.hidden = !match; shown += match ? 1 : 0;
    });
    count.textContent = query ? shown + " of " + rows.length + " rows shown" : "";
  });
})();"""
DRILL_DOWN_ROWS = 1000


def _header(comparison: dict, strategies) -> str:
    task = _task(comparison)
    data = comparison.get("data")
    if data is None:  # no top-level data field: name the files the strategies read
        paths = [p for _, s in strategies for d in _dict(s.get("data")).values() if (p := _dict(d).get("path"))]
        data = list(dict.fromkeys(map(_text, paths)))[:4] or None
    parts = [f"project: {_text(comparison.get('project'))}" if comparison.get("project") else "",
             f"data: {_text(data)}" if data else "", f"created {_text(comparison.get('created'))}"
             if comparison.get("created") else "", f"ragtune {_text(comparison.get('ragtune_version'))}"
             if comparison.get("ragtune_version") else ""]
    return (f"<header><h1>ragtune compare: {escape(task)}</h1>"
            f'<div class="meta">{" · ".join(escape(p) for p in parts if p)}</div>'
            '<nav><a href="#summary">Summary</a><a href="#charts">Charts</a><a href="#details">Strategies</a>'
            '<a href="#drill-down">Disagreements</a></nav></header>')


def _recommendation_box(comparison: dict, strategies) -> str:
    recommendation = _dict(comparison.get("recommendation"))
    text = recommendation.get("text")
    if not text:
        text = ("No recommendation: no strategy produced results." if not any(_is_ok(s) for _, s in strategies)
                else "No recommendation was made.")
    parts = [f'<section class="verdict" id="recommendation"><p>{escape(_text(text))}</p>']
    if tie := _tie_sentence(comparison):
        parts.append(f'<p class="{"tie" if _dict(comparison.get("paired")).get("tie") else "muted"}">{escape(tie)}</p>')
    if claims := _list(recommendation.get("claims")):
        parts.append("<h3>Evidence</h3><ul>" + "".join(f"<li>{escape(_text(c))}</li>" for c in claims) + "</ul>")
    if changes := _list(recommendation.get("would_change")):
        parts.append("<h3>What would change the verdict</h3><ul>"
                     + "".join(f"<li>{escape(_text(c))}</li>" for c in changes) + "</ul>")
    return "".join(parts) + "</section>"


def _summary(comparison: dict, strategies, primary: str | None, others: list[str]) -> str:
    recommended, best = _recommended(comparison), comparison.get("best")
    budget = _num(_dict(comparison.get("constraints")).get("latency_budget_ms"))
    splits = list(dict.fromkeys(_text(s["split"]) for _, s in strategies if _is_ok(s) and s.get("split")))
    per_row_split = len(splits) > 1
    head = ([("strategy", "")], [(f"{primary or 'metric'} [95% CI]", "num"), ("vs best (* beyond noise)", "num")],
            [(m, "num") for m in others],
            [("p50 ms", "num"), ("p95 ms", "num"), ("cost / 1k q", "num"), ("train s", "num"), ("index s", "num"),
             ("freshness", "fresh")])
    columns = [c for group in head for c in group]
    rows = []
    for i, (name, s) in enumerate(strategies):
        badge = '<span class="badge">★ recommended</span>' if name == recommended else \
            '<span class="badge top">top score</span>' if name == best else ""
        cell = f'<a href="#strategy-{i}">{escape(name)}</a>{badge}'
        if per_row_split and s.get("split"):
            cell += f'<div class="muted">{escape(_text(s["split"]))}</div>'
        if not _is_ok(s):
            reason = f"{_text(s.get('status') or 'skipped')}: {_text(s.get('reason'))}"
            rows.append(f'<tr class="skipped"><td>{cell}</td>'
                        f'<td colspan="{len(columns) - 1}">{escape(reason)}</td></tr>')
            continue
        scores, one_time = _dict(s.get("metrics")), _dict(s.get("one_time"))
        p95 = _latency(s, "p95")
        over = budget is not None and p95 is not None and p95 > budget
        cells = [fmt_interval(scores.get(primary)), escape(vs_best(comparison, name))]
        cells += [f'<span title="{escape(fmt_interval(scores.get(m)))}">{fmt_metric(_interval(scores.get(m))[0])}'
                  "</span>" for m in others]
        cells += [fmt_ms(_latency(s, "p50")), f'<span class="over" title="over the {fmt_ms(budget)} ms budget">'
                  f"{fmt_ms(p95)}</span>" if over else fmt_ms(p95), fmt_cost(s.get("cost_per_1k_queries")),
                  fmt_seconds(one_time.get("training_seconds")), fmt_seconds(one_time.get("index_seconds")),
                  "<br>".join(escape(line) for line in _freshness_text(s, "\n").split("\n"))]
        tds = "".join(f'<td class="{kind}">{value}</td>' for (_, kind), value in zip(columns[1:], cells))
        rows.append(f'<tr{" class=recommended" if name == recommended else ""}><td>{cell}</td>{tds}</tr>')
    header = "".join(f'<th class="{kind}">{escape(label)}</th>' for label, kind in columns)
    split_line = f'<p class="muted">Split (all strategies): {escape(splits[0])}</p>' if len(splits) == 1 else ""
    if not rows:
        return '<h2 id="summary">Summary</h2><p class="note">No strategies in this comparison.</p>'
    return (f'<h2 id="summary">Summary</h2>{split_line}<table class="summary"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _charts(comparison: dict, strategies, primary: str | None) -> str:
    ran = [(n, s) for n, s in strategies if _is_ok(s)]
    fresh = [(n, _dict(s.get("freshness"))) for n, s in ran if _dict(s.get("freshness"))]
    updates = list(dict.fromkeys(_text(f["update"]) for _, f in fresh if f.get("update")))
    metric = next((_text(f["metric"]) for _, f in fresh if f.get("metric")), primary or "metric")
    parts = ['<h2 id="charts">Charts</h2><h3>Quality against latency</h3>',
             quality_latency_chart(comparison, ran, primary), "<h3>Cost</h3>", cost_chart(ran), "<h3>Freshness</h3>"]
    if fresh:
        caption = f"Freshness: {metric} on the new data before and after absorbing the update" + \
                  (f" ({'; '.join(updates)})" if updates else "") + ", with the time it took"
        parts.append(dumbbell_chart("chart-freshness", caption, [(n, f.get("before"), f.get("after"), _absorb(f))
                                                                 for n, f in fresh], metric))
    else:
        parts.append('<p class="note">No strategy measured freshness.</p>')
    forgetting = [(n, _dict(s.get("forgetting"))) for n, s in ran if _dict(s.get("forgetting"))]
    parts.append("<h3>Forgetting</h3>")
    if forgetting:
        sets = list(dict.fromkeys(_text(f["set"]) for _, f in forgetting if f.get("set")))
        metric = next((_text(f["metric"]) for _, f in forgetting if f.get("metric")), "metric")
        caption = f"Forgetting: {metric} on the general set{' (' + '; '.join(sets) + ')' if sets else ''} " \
                  "before and after training"
        parts.append(dumbbell_chart("chart-forgetting", caption, [(n, f.get("before"), f.get("after"), "")
                                                                  for n, f in forgetting], metric))
    else:
        note = comparison.get("forgetting_note") or "no strategy measured a general set before and after training"
        parts.append(f'<p class="note">Forgetting not measured: {escape(_text(note).rstrip("."))}.</p>')
    return "".join(parts)


def _key_values(values: dict) -> str:
    return " · ".join(f"{escape(str(k))} {escape(_text(v))}" for k, v in values.items()) or DASH


def _strategy_details(index: int, name: str, s: dict) -> str:
    status = _text(s.get("status") or ("ok" if _is_ok(s) else "skipped"))
    parts = [f'<details id="strategy-{index}"><summary>{escape(name)} <span class="muted">'
             f'{escape(_text(s.get("family") or ""))} · {escape(status)}</span></summary>']
    for label, key in (("Description", "description"), ("Reason", "reason"), ("Split", "split"),
                       ("Result file", "result_file")):
        if s.get(key):
            parts.append(f'<p><b>{label}:</b> {escape(_text(s[key]))}</p>')
    if s.get("answer_kind") == "quote":
        parts.append("<p><b>Answers are quotes</b> copied from the retrieved sources (extractive), so faithfulness "
                     "is not scored: a quote is supported by construction. <i>verbatim</i> is the share of answers "
                     "found word for word in a cited source.</p>")
    if metrics := _dict(s.get("metrics")):
        parts.append('<h3>Metrics</h3><table><tr><th>metric</th><th class="num">mean</th><th class="num">95% CI</th>'
                     '<th class="num">n</th></tr>')
        for metric, value in metrics.items():
            mean, low, high = _interval(value)
            ci = DASH if low is None or high is None else f"[{low:.3f}, {high:.3f}]"
            parts.append(f'<tr><td>{escape(str(metric))}</td><td class="num">{fmt_metric(mean)}</td>'
                         f'<td class="num">{ci}</td><td class="num">{fmt_number(_dict(value).get("n"))}</td></tr>')
        parts.append("</table>")
    if latency := _dict(s.get("latency_ms")):
        parts.append('<h3>Latency per stage</h3><table><tr><th>stage</th><th class="num">p50 ms</th>'
                     '<th class="num">p95 ms</th></tr>')
        for stage in sorted(latency, key=lambda k: k != "total"):
            parts.append(f'<tr><td>{escape(str(stage))}</td><td class="num">{fmt_ms(_latency(s, "p50", stage))}</td>'
                         f'<td class="num">{fmt_ms(_latency(s, "p95", stage))}</td></tr>')
        parts.append("</table>")
    for label, key in (("Tokens", "tokens"), ("One-time", "one_time"), ("Versions", "versions")):
        if values := _dict(s.get(key)):
            parts.append(f"<p><b>{label}:</b> {_key_values(values)}</p>")
    for label, key in (("Freshness", "freshness"), ("Forgetting", "forgetting")):
        if values := _dict(s.get(key)):
            shown = {k: fmt_interval(v) if k in ("before", "after") else v for k, v in values.items()}
            parts.append(f"<p><b>{label}:</b> {_key_values(shown)}</p>")
    if data := _dict(s.get("data")):
        parts.append('<h3>Data</h3><table><tr><th>part</th><th>path</th><th>sha256</th><th class="num">rows</th></tr>')
        for part, d in data.items():
            d = _dict(d)
            digest = _text(d.get("sha256"))
            parts.append(f'<tr><td>{escape(str(part))}</td><td>{escape(_text(d.get("path")))}</td>'
                         f'<td class="id" title="{escape(digest)}">{escape(digest[:16])}</td>'
                         f'<td class="num">{fmt_number(d.get("rows"))}</td></tr>')
        parts.append("</table>")
    if s.get("config") is not None:
        config = json.dumps(s["config"], indent=2, default=str, ensure_ascii=False)
        parts.append(f"<h3>Config</h3><pre>{escape(config)}</pre>")
    return "".join(parts) + "</details>"


def _drill_down(comparison: dict, strategies) -> tuple[str, bool]:
    """The table of examples where strategies disagree, and whether it has rows (then the filter script runs)."""
    examples = [e for e in _list(comparison.get("disagreements")) if isinstance(e, dict)]
    head = '<h2 id="drill-down">Where the strategies disagree</h2>'
    if not examples:
        return head + '<p class="note">No disagreements recorded.</p>', False
    order = {name: i for i, (name, _) in enumerate(strategies)}
    names = sorted({n for e in examples for n in _dict(e.get("predictions"))}, key=lambda n: (order.get(n, 1e9), n))
    rows = []
    for e in examples[:DRILL_DOWN_ROWS]:
        predictions, correct, gold = _dict(e.get("predictions")), _dict(e.get("correct")), e.get("gold")
        cells = []
        for name in names:
            if name not in predictions:
                cells.append(f"<td>{DASH}</td>")
                continue
            right = correct.get(name)
            if not isinstance(right, bool) and gold is not None:  # not given: a label is right or wrong,
                exact = predictions[name] == gold                   # an answer only known right when exact
                right = exact if comparison.get("task") == "classify" else (True if exact else None)
            kind, mark = {True: ("ok", "✓ "), False: ("bad", "✗ "), None: ("", "")}[right]
            cells.append(f'<td class="{kind}">{mark}{escape(_text(predictions[name]))}</td>')
        text = f'<div class="example">{escape(_text(e["input"]))}</div>' if e.get("input") else ""
        rows.append(f'<tr><td><span class="id">{escape(_text(e.get("id")))}</span>{text}</td>'
                    f'<td>{escape(_text(gold))}</td>{"".join(cells)}</tr>')
    more = f'<p class="note">Showing the first {DRILL_DOWN_ROWS} of {len(examples)}.</p>' \
        if len(examples) > DRILL_DOWN_ROWS else ""
    header = "".join(f"<th>{escape(n)}</th>" for n in names)
    return (f'{head}<p class="muted">{len(examples)} examples where at least two strategies answer differently.</p>'
            '<input id="filter" type="search" placeholder="Filter rows: id, text, label…" hidden '
            'aria-label="filter rows"> <span id="filter-count" class="muted"></span>'
            f'{more}<table id="disagreements"><thead><tr><th>example</th><th>gold</th>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>'), True


def render_html(comparison: dict) -> str:
    """The whole report as one self-contained HTML page."""
    comparison = _dict(comparison)
    strategies = _strategies(comparison)
    primary, others = _metrics(comparison, strategies)
    drill_down, filterable = _drill_down(comparison, strategies)
    task = _task(comparison)
    details = "".join(_strategy_details(i, n, s) for i, (n, s) in enumerate(strategies))
    version, schema = comparison.get("ragtune_version"), comparison.get("schema")
    footer = escape((f" {_text(version)}" if version else "") + (f" from {_text(schema)}" if schema else ""))
    return "".join([
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ragtune compare: {escape(task)}</title><style>{CSS}</style></head><body><main>",
        _header(comparison, strategies), _recommendation_box(comparison, strategies),
        _summary(comparison, strategies, primary, others), _charts(comparison, strategies, primary),
        f'<h2 id="details">Strategies</h2>{details or "<p class=note>None.</p>"}', drill_down,
        f'<p class="muted">Written by ragtune{footer}.</p></main>',
        f"<script>{FILTER_SCRIPT}</script>" if filterable else "", "</body></html>\n"])


def write_report(comparison: dict, path: str | os.PathLike) -> Path:
    """Write the HTML report to `path` atomically (a temp file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = render_html(comparison)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(page)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
