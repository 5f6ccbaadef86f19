"""The recommendation: which strategy to use, in a few sentences whose every claim is a measured
figure or one of the user's constraints, and what would change the verdict.

The rule, in order:
1. Strategies over the latency budget (p95) or the training budget are not eligible.
2. The eligible strategy with the best primary metric leads; a paired bootstrap test compares it
   with the runner-up on the examples both answered.
3. A significant difference decides. Within the noise (the difference's 95% interval holds 0) the
   leader stays unless the runner-up is materially cheaper to run: less upkeep (seconds a month
   spent absorbing updates: absorb time x `updates_per_month`), then lower p95 latency, then less
   training. So swapping the two strategies' results swaps the verdict.
"""
from __future__ import annotations

from ragtune.evaluate.stats import paired

_NONE = float("inf")


def _mean(summary: dict, metric: str) -> float | None:
    value = (summary.get("metrics") or {}).get(metric)
    return value["mean"] if value else None


def _p95(summary: dict) -> float | None:
    total = (summary.get("latency_ms") or {}).get("total")
    return total["p95"] if total else None


def upkeep_seconds(summary: dict, updates_per_month: float) -> float | None:
    """Seconds a month spent absorbing updates: the measured absorb time, else (no update measured)
    the one-time training or indexing time, times the updates a month."""
    fresh = summary.get("freshness") or {}
    seconds = fresh.get("absorb_seconds")
    if seconds is None:
        one_time = summary.get("one_time") or {}
        seconds = one_time.get("training_seconds") or one_time.get("index_seconds")
    return None if seconds is None else seconds * updates_per_month


def _ms(value: float | None) -> str:
    """Milliseconds, with a decimal below 10 ms (so 5.6 and 6.1 do not both read 6)."""
    if value is None:
        return "n/a"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _interval(summary: dict, metric: str) -> str:
    value = summary["metrics"][metric]
    low, high = value["ci95"]
    return f"{value['mean']:.3f} [{low:.3f}, {high:.3f}]"


def eligibility(summary: dict, constraints: dict) -> str | None:
    """Why a strategy breaks the user's constraints, or None."""
    budget, p95 = constraints.get("latency_budget_ms"), _p95(summary)
    if budget and p95 is not None and p95 > budget:
        return f"p95 latency {_ms(p95)} is over your {budget:g} ms budget"
    minutes = constraints.get("training_budget_minutes")
    training = (summary.get("one_time") or {}).get("training_seconds")
    if minutes and training and training / 60 > minutes:
        return f"training took {training / 60:.1f} min, over your {minutes:g} min budget"
    return None


def paired_test(a: dict, b: dict, metric_key: str, seed: int = 0) -> dict | None:
    """Paired bootstrap of per-example scores (each record's primary metric per example, `score`)
    on the examples both records hold."""
    scores_a = {e["id"]: e["score"] for e in a.get("examples", []) if e.get("score") is not None}
    scores_b = {e["id"]: e["score"] for e in b.get("examples", []) if e.get("score") is not None}
    common = sorted(scores_a.keys() & scores_b.keys())
    if not common:
        return None
    result = paired([scores_a[i] for i in common], [scores_b[i] for i in common], seed=seed)
    return {"a": a["strategy"], "b": b["strategy"], "metric": metric_key, **result.as_dict()}


def recommend(summaries: list[dict], records: dict[str, dict], constraints: dict, primary: str) -> dict:
    """{"best", "runner_up", "paired", "recommendation": {strategy, text, claims, would_change}}."""
    ok = [s for s in summaries if s["status"] == "ok" and _mean(s, primary) is not None]
    if not ok:
        return {"best": None, "runner_up": None, "paired": None,
                "recommendation": {"strategy": None, "text": "No strategy produced results to compare.",
                                   "claims": [], "would_change": []}}
    excluded = {s["name"]: eligibility(s, constraints) for s in ok}
    eligible = sorted([s for s in ok if not excluded[s["name"]]], key=lambda s: -_mean(s, primary))
    claims = [f"{name} is not eligible: {why}." for name, why in excluded.items() if why]
    if not eligible:
        return {"best": None, "runner_up": None, "paired": None,
                "recommendation": {"strategy": None, "text": "No strategy meets your constraints: "
                                   + "; ".join(f"{n}: {w}" for n, w in excluded.items() if w) + ".",
                                   "claims": claims, "would_change": ["Relax compare.constraints."]}}
    leader = eligible[0]
    if len(eligible) == 1:
        return {"best": leader["name"], "runner_up": None, "paired": None, "recommendation": {
            "strategy": leader["name"], "claims": claims, "would_change": [],
            "text": f"{leader['name']}: {primary} {_interval(leader, primary)}; the only eligible strategy."}}
    runner = eligible[1]
    test = paired_test(records[leader["name"]], records[runner["name"]], primary)
    months = constraints.get("updates_per_month", 0) or 0
    best, other, why = leader, runner, "quality"
    if test and test["tie"]:
        why = _tie_break(leader, runner, months)
        if why.startswith("runner-up:"):
            best, other, why = runner, leader, why.removeprefix("runner-up:")
    text, more_claims = _verdict(best, other, test, primary, constraints, why)
    return {"best": best["name"], "runner_up": other["name"], "paired": test, "recommendation": {
        "strategy": best["name"], "text": text, "claims": more_claims + claims,
        "would_change": _what_would_change(best, other, eligible, ok, excluded, test, primary, constraints, summaries)}}


def _material(a: float | None, b: float | None, floor: float) -> bool:
    """b is better than a (smaller) by more than `floor` and by more than half of a."""
    return a is not None and b is not None and a - b > max(floor, 0.5 * a)


def _tie_break(leader: dict, runner: dict, months: float) -> str:
    """Within the noise the leader stays, unless the runner-up is materially cheaper to run: first
    upkeep (absorbing updates), then p95 latency, then training time. Returns the deciding reason,
    prefixed with 'runner-up:' when the runner-up wins."""
    criteria = (("upkeep", lambda s: upkeep_seconds(s, months), 60.0), ("latency", _p95, 10.0),
                ("training", lambda s: (s.get("one_time") or {}).get("training_seconds") or 0.0, 60.0))
    for name, measure, floor in criteria:
        a, b = measure(leader), measure(runner)
        if _material(a, b, floor):
            return f"runner-up:{name}"
        if _material(b, a, floor):
            return name
    return "tie-quality"


def _verdict(best: dict, other: dict, test: dict | None, primary: str, constraints: dict, why: str) -> tuple[str, list[str]]:
    name, rival = best["name"], other["name"]
    months = constraints.get("updates_per_month", 0) or 0
    claims = [f"{name}: {primary} {_interval(best, primary)}", f"{rival}: {primary} {_interval(other, primary)}"]
    if test:
        low, high = test["ci95"]
        sign = 1 if test["a"] == name else -1
        difference, low, high = sign * test["difference"], *sorted((sign * low, sign * high))
        claims.append(f"paired difference {name} - {rival}: {difference:+.3f}, 95% CI [{low:+.3f}, {high:+.3f}], "
                      f"p = {test['p_value']:.3g} on {test['n']} examples")
    if test is None:
        text = (f"Use {name}. It scores {primary} {_mean(best, primary):.3f} vs {_mean(other, primary):.3f} for {rival}; "
                "they share no test examples, so no paired test could check the difference.")
    elif why == "quality":
        text = (f"Use {name}. It scores {primary} {_mean(best, primary):.3f} vs {_mean(other, primary):.3f} for {rival}, "
                f"a significant difference (95% CI of the paired difference excludes 0).")
    else:
        text = (f"Use {name}. It is tied with {rival} on {primary} ({_mean(best, primary):.3f} vs "
                f"{_mean(other, primary):.3f}; the 95% CI of the paired difference holds 0), ")
        if why == "upkeep":
            text += (f"and it absorbs a knowledge update in {_seconds(_absorb(best))} vs {_seconds(_absorb(other))} "
                     f"({months:g} updates a month: {_seconds(upkeep_seconds(best, months))} vs "
                     f"{_seconds(upkeep_seconds(other, months))} of upkeep a month).")
        elif why == "latency":
            text += f"and it answers faster: p95 {_ms(_p95(best))} vs {_ms(_p95(other))}."
        elif why == "training":
            text += (f"and it is cheaper to build: {_seconds(_training(best))} of training vs "
                     f"{_seconds(_training(other))}.")
        else:
            text += "and neither is materially cheaper to run, so the higher score decides."
    p95, budget = _p95(best), constraints.get("latency_budget_ms")
    if p95 is not None:
        text += f" Its p95 latency is {_ms(p95)}" + (f", inside your {budget:g} ms budget." if budget else ".")
        claims.append(f"{name}: p95 latency {p95:.1f} ms")
    fresh = best.get("freshness")
    if fresh and fresh.get("after") and why != "upkeep":
        text += (f" After a knowledge update it scores {fresh['metric']} {fresh['after']['mean']:.3f} on the changed "
                 f"examples (before absorbing it: {fresh['before']['mean']:.3f}), absorbed in {_seconds(fresh.get('absorb_seconds'))} "
                 f"({fresh['absorb']}).")
    training = (best.get("one_time") or {}).get("training_seconds")
    if training:
        claims.append(f"{name}: training took {_seconds(training)}")
    forgetting = best.get("forgetting")
    if forgetting and forgetting.get("before") and forgetting.get("after"):
        text += (f" Fine-tuning cost general ability: {forgetting['metric']} {forgetting['before']['mean']:.3f} -> "
                 f"{forgetting['after']['mean']:.3f} on the general set.")
    return text, claims


def _training(summary: dict) -> float:
    return (summary.get("one_time") or {}).get("training_seconds") or 0.0


def _absorb(summary: dict) -> float | None:
    return (summary.get("freshness") or {}).get("absorb_seconds")


def _what_would_change(best, other, eligible, ok, excluded, test, primary, constraints, summaries) -> list[str]:
    out = []
    for s in ok:
        if excluded[s["name"]] and _mean(s, primary) > _mean(best, primary):
            out.append(f"{s['name']} scores higher ({primary} {_mean(s, primary):.3f}) but {excluded[s['name']]}; "
                       "with that constraint relaxed it would lead.")
    p95 = _p95(best)
    if p95 is not None and len(eligible) > 1:
        faster = [s for s in eligible if s is not best and (_p95(s) or _NONE) < p95]
        if faster:
            nxt = max(faster, key=lambda s: _mean(s, primary))
            out.append(f"A latency budget under {_ms(p95)} would rule out {best['name']}; {nxt['name']} "
                       f"({primary} {_mean(nxt, primary):.3f}, p95 {_ms(_p95(nxt))}) would then be recommended.")
    if test and test["tie"]:
        low, high = test["ci95"]
        out.append(f"The two are within the noise at n = {test['n']} (CI width {high - low:.3f}); more test "
                   "examples could separate them, and then quality would decide.")
    elif test:
        upkeep_best, upkeep_other = _absorb(best), _absorb(other)
        if upkeep_best is not None and upkeep_other is not None and upkeep_other < upkeep_best:
            out.append(f"{other['name']} absorbs an update faster ({_seconds(upkeep_other)} vs {_seconds(upkeep_best)}); "
                       f"if the quality gap closed, frequent updates would favour it.")
    skipped = [s["name"] for s in summaries if s["status"] == "skipped"]
    if skipped:
        out.append(f"Not compared here: {', '.join(skipped)} (see the reasons); configure what they need and "
                   "run `ragtune compare` again.")
    return out
