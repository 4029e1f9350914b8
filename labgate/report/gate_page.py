"""The gate page: reports/gate-<id>/index.html, from gate.json (labgate.gate)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px;vertical-align:top;max-width:520px;overflow-wrap:anywhere}
th{background:#f3f3f3}.ok{background:#e6f4e6}.bad{background:#fbe3e3}.na{color:#777}.warn{background:#fff4d6}
.verdict{font-size:20px;padding:8px 12px;display:inline-block;border-radius:4px}
code{font-size:13px}
"""
CHANGE_CLASS = {"regressed": "bad", "newly-skipped": "warn", "changed": "warn", "removed": "warn", "fixed": "ok", "new": "", "same": ""}


def _versions(record: dict[str, Any]) -> str:
    a, b = record["from"], record["to"]
    rows = []
    for role in sorted(set(a["versions"]) | set(b["versions"])):
        va, vb = a["versions"].get(role, "-"), b["versions"].get(role, "-")
        rows.append(f"<tr class='{'warn' if va != vb else ''}'><td>{escape(role)}</td><td>{escape(va)}</td><td>{escape(vb)}</td></tr>")
    if "kyverno_chart" in a:
        ca, cb = a["kyverno_chart"], b.get("kyverno_chart", {})
        rows.append(f"<tr><td>kyverno chart (its module's Chart.yaml)</td><td>{escape(ca.get('chart', '?'))}</td>"
                    f"<td>{escape(cb.get('chart', '?'))}</td></tr>")
    return ("<table><tr><th>component</th><th>from</th><th>to</th></tr>" + "".join(rows) + "</table>"
            f"<p>from <code>{escape(a['scenario'])}</code> to <code>{escape(b['scenario'])}</code></p>")


def _timeline(probes: dict[str, Any]) -> str:
    """One lane per probe: each probe a tick, green when it passed, red when it failed; the upgrade
    window shaded."""
    results = probes.get("results") or []
    total = max(probes.get("seconds") or 1.0, 0.001)
    names = sorted({r["probe"] for r in results})
    width, lane, left = 1000, 26, 150
    scale = (width - left - 10) / total
    h = lane * len(names) + 30
    parts = [f"<svg width='{width}' height='{h}' xmlns='http://www.w3.org/2000/svg' font-size='12'>"]
    w0, w1 = probes.get("upgrade_window") or [0, 0]
    parts.append(f"<rect x='{left + w0 * scale:.1f}' y='0' width='{max(1, (w1 - w0) * scale):.1f}' height='{h - 20}' fill='#eef'/>")
    for i, name in enumerate(names):
        y = i * lane + 4
        parts.append(f"<text x='0' y='{y + 14}'>{escape(name)}</text>")
        for r in (r for r in results if r["probe"] == name):
            color = "#2a2" if r["ok"] else "#d22"
            title = f"{r['t']:.2f}s {'ok' if r['ok'] else r['detail']}"
            parts.append(f"<rect x='{left + r['t'] * scale:.1f}' y='{y}' width='3' height='18' fill='{color}'><title>{escape(title)}</title></rect>")
    for s in range(0, int(total) + 1, max(1, int(total // 10) or 1)):
        parts.append(f"<text x='{left + s * scale:.1f}' y='{h - 5}'>{s}s</text>")
    parts.append("</svg>")
    return "".join(parts)


def _diff_table(rows: list[dict[str, Any]], empty: str) -> str:
    if not rows:
        return f"<p>{escape(empty)}</p>"
    return ("<table><tr><th>test</th><th>change</th><th>baseline</th><th>candidate</th><th>message</th></tr>"
            + "".join(f"<tr class='{CHANGE_CLASS[r['change']]}'><td><code>{escape(r['nodeid'])}</code></td><td>{r['change']}</td>"
                      f"<td>{escape(r['before'])}</td><td>{escape(r['after'])}</td><td>{escape(r['message'][:300]) if r['change'] != 'same' else ''}</td></tr>"
                      for r in rows)
            + "</table>")


def write_page(record: dict[str, Any], out: Path) -> Path:
    probes = record.get("probes") or {}
    good = record["exit_code"] == 0
    diff = record.get("diff") or []
    counts: dict[str, int] = {}
    for r in diff:
        counts[r["change"]] = counts.get(r["change"], 0) + 1
    body = [f"<h1>labgate gate {escape(record['id'])}</h1>",
            f"<p class='verdict {'ok' if good else 'bad'}'>{escape(record['result'])} (exit {record['exit_code']})</p>",
            "<h2>Versions</h2>", _versions(record),
            "<h2>Upgrade</h2><table><tr><th>component</th><th>from</th><th>to</th><th>seconds</th></tr>"
            + "".join(f"<tr><td>{escape(u['component'])}</td><td>{escape(str(u['from']))}</td><td>{escape(str(u['to']))}</td><td>{u['seconds']}</td></tr>"
                      for u in record.get("upgraded") or [])
            + "</table>",
            "<h2>Availability probes</h2>",
            "<p>" + ", ".join(f"{escape(k)} {v} Hz" for k, v in (probes.get("rate_hz") or {}).items())
            + f" over {probes.get('seconds', 0)} s; the upgrade window is shaded. Budget: {escape(str(probes.get('budget')))}</p>",
            _timeline(probes),
            "<table><tr><th>probe</th><th>gap from</th><th>to</th><th>seconds</th><th>first failure</th></tr>"
            + "".join(f"<tr class='{'bad' if g in probes.get('over_budget', []) else 'warn'}'><td>{escape(g['probe'])}</td><td>{g['start']}</td>"
                      f"<td>{g['end']}{' (still failing)' if g.get('open') else ''}</td><td>{g['seconds']}</td><td>{escape(g['detail'])}</td></tr>"
                      for g in probes.get("gaps") or [])
            + ("" if probes.get("gaps") else "<tr><td colspan=5>no probe failed</td></tr>") + "</table>",
            "<h2>Survival</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>"
            + "".join(f"<tr class='{ {'ok': 'ok', 'FAILED': 'bad'}.get(r['result'], 'na') }'><td>{escape(r['check'])}</td><td>{escape(r['result'])}</td>"
                      f"<td>{escape(r['detail'])}</td></tr>" for r in record.get("survival") or [])
            + "</table>",
            "<h2>Verdicts: baseline → candidate</h2><p>" + ", ".join(f"{escape(k)} {v}" for k, v in sorted(counts.items()))
            + " · <a href='baseline/index.html'>baseline report</a> · <a href='candidate/index.html'>candidate report</a> · "
            "<a href='gate.json'>gate.json</a></p>",
            _diff_table([r for r in diff if r["change"] != "same"], "no test changed its verdict"),
            f"<details><summary>{counts.get('same', 0)} tests with the same verdict on both sides</summary>"
            + _diff_table([r for r in diff if r["change"] == "same"], "none") + "</details>",
            "<h2>Phases (seconds)</h2><table>" + "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in (record.get("phases") or {}).items())
            + "</table>"]
    page = out / "index.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>labgate gate {escape(record['id'])}</title>"
                    f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    return page
