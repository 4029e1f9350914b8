"""labgate's own summary page: one self-contained HTML file per run (no script, no external asset)."""

from __future__ import annotations

from html import escape
from typing import Any

VERDICTS = ("pass", "fail", "warn", "unsupported", "not-enforced", "known", "skip", "error")
COLORS = {
    "pass": "#1a7f37", "fail": "#cf222e", "warn": "#bf8700", "unsupported": "#6e7781",
    "known": "#8250df", "skip": "#57606a", "error": "#a40e26", "not-enforced": "#9a6700", "passed": "#1a7f37", "failed": "#cf222e",
    "interrupted": "#bf8700", "agree": "#1a7f37", "disagree": "#cf222e",
}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:16px 28px}
header h1{margin:0;font-size:20px} header .meta{opacity:.8;font-size:13px;margin-top:4px}
main{padding:8px 28px 40px;max-width:1300px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;margin:16px 0;padding:12px 18px}
h2{font-size:16px;margin:6px 0 10px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eaeef2;vertical-align:top;overflow-wrap:anywhere}
th.num{text-align:right}
th{background:#f6f8fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.big{font-size:15px;padding:3px 12px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f6f8fa;padding:1px 4px;border-radius:4px}
.note{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 12px;margin:6px 0}
.bar{display:inline-block;height:10px;background:#0969da;border-radius:2px;vertical-align:middle}
.muted{color:#57606a}
table.grid td,table.grid th{overflow-wrap:normal;font-size:12px;padding:4px 6px}
.oidc td:last-child,.adm td:nth-child(-n+3),.adm td:nth-child(5),.adm td:nth-child(6),.adm td:nth-child(7){white-space:nowrap;overflow-wrap:normal}
a{color:#0969da}
"""


def _b(verdict: str, big: bool = False) -> str:
    color = COLORS.get(verdict, "#57606a")
    return f'<span class="badge{" big" if big else ""}" style="background:{color}">{escape(verdict)}</span>'


def _secs(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return f"{f * 1000:.0f} ms" if f < 1 else f"{f:.2f} s"


def _table(headers: list[str], rows: list[list[str]], num_cols: tuple[int, ...] = ()) -> str:
    head = "".join(f'<th class="num">{escape(h)}</th>' if i in num_cols else f"<th>{escape(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in num_cols else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(d: dict[str, Any]) -> str:
    stack = d.get("stack") or {}
    parts: list[str] = []
    result = d.get("result", "failed")
    parts.append(
        f"<header><h1>labgate run {escape(d['run_id'])} {_b(result, True)}</h1>"
        f"<div class=meta>scenario <b>{escape(d['scenario']['name'])}</b> ({escape(d['scenario']['file'])}) · "
        f"provider {escape(str(stack.get('provider', '?')))} · arch {escape(str(stack.get('arch', '?')))} · "
        f"registry <b>{escape(str(stack.get('registry_kind') or '-'))}</b> · started {escape(d['started'])} · exit status {escape(str(d.get('exitstatus')))}</div></header><main>"
    )
    notes = list(d.get("notes") or [])
    if d.get("stack_error"):
        notes.insert(0, "the stack did not start: " + d["stack_error"])
    for n in notes:
        parts.append(f'<div class="note">{escape(n)}</div>')
    events = d.get("events") or []
    if events:
        import time as _time

        rows = [[f"<b>{escape(e['component'])}</b>", escape(e["what"]), escape(_time.strftime("%H:%M:%S", _time.localtime(float(e["at"])))),
                 f"<code>{escape(e.get('log_tail') or '')}</code>"] for e in events]
        parts.append(f'<section style="border:2px solid {COLORS["error"]}"><h2 style="color:{COLORS["error"]}">A component died during the run: '
                     'every failure after it is verdict error</h2>' + _table(["component", "what", "at", "its last log lines"], rows) + "</section>")
    tests_all = d.get("tests") or []
    unenforced = [t for t in tests_all if t.get("verdict") == "not-enforced"]
    if unenforced:
        parts.append(f'<div class="note"><b>{len(unenforced)} access cell(s) not enforced by this registry</b>: the scenario denies them, '
                     f'the {escape(str(stack.get("registry_kind") or "registry"))} registry allowed them (see the access grid and the results below)</div>')

    links = ['<a href="allure-report/index.html">Allure report</a> <span class="muted">(it loads its data over http: '
             f'<code>python3 -m http.server -d reports/{escape(d["run_id"])}</code>, then open /allure-report/)</span>', '<a href="junit.xml">JUnit XML</a>',
             '<a href="summary.json">summary.json</a>', '<a href="logs/">component logs (redacted)</a>']
    parts.append(f"<section><h2>Artifacts</h2>{' · '.join(links)}</section>")

    # verdicts per suite
    rows = []
    for name, s in sorted((d.get("suites") or {}).items()):
        c = s["counts"]
        rows.append([f"<b>{escape(name)}</b>"] + [str(c.get(v, 0)) if c.get(v) else '<span class="muted">0</span>' for v in VERDICTS]
                    + [_secs(s["wall"])])
    parts.append("<section><h2>Verdicts per suite</h2>" + _table(["suite", *VERDICTS, "suite time"], rows, tuple(range(1, len(VERDICTS) + 2)))
                 + '<p class="muted">pass · fail = a MUST broken · warn = a SHOULD broken · unsupported = an optional feature the system answers as unsupported · '
                 'not-enforced = the scenario denies it, this registry cannot enforce it, and it was allowed · known = a quarantined failure matching its evidence, with owner and expiry · '
                 'skip = not run, with reason and fix · error = the check could not be made (a component died, the harness or infrastructure broke)</p></section>')

    # components
    rows = []
    for c in stack.get("components") or []:
        rows.append([escape(c["name"]), escape(c["kind"]), f"<code>{escape(c['version'])}</code>", escape(c.get("reported_version") or ""),
                     escape(c["source"]), f"<code>{escape(c['path'])}</code>", _secs(c.get("start_seconds"))])
    for name, why in (stack.get("skipped_components") or {}).items():
        rows.append([escape(name), "", "", "", "<b>not available</b>", escape(why), ""])
    parts.append("<section><h2>Components</h2>" + _table(["role", "kind", "pinned version", "reports", "source", "path / reason", "warm start"], rows, (6,)) + "</section>")

    # timings
    phases = d.get("phases") or {}
    budgets = d.get("budgets") or {}
    top = max([float(v) for v in phases.values()] + [0.001])
    rows = []
    for k, v in phases.items():
        b = budgets.get(k)
        judged = "" if b is None else (_b("warn") + f" over {_secs(b)}" if float(v) > float(b) else f'<span class="muted">within {_secs(b)}</span>')
        rows.append([escape(k), _secs(v), judged, f'<span class="bar" style="width:{max(2, int(300 * float(v) / top))}px"></span>'])
    parts.append("<section><h2>Timings per phase</h2>" + _table(["phase", "time", "budget", ""], rows, (1,)) + "</section>")

    # peer cross-check
    peer = d.get("peer")
    if peer:
        rows = []
        for a in peer.get("areas", []):
            rows.append([escape(a["area"]), _b(a["labgate"]), escape(a.get("labgate_detail", "")), _b(a["official"]),
                         escape(a.get("official_detail", "")), _b("agree" if a["agree"] else "disagree"),
                         escape(a.get("labgate_beyond", "")) or '<span class="muted">-</span>'])
        parts.append(
            "<section><h2>Peer cross-check: labgate vs the official OCI conformance program</h2>"
            f"<p>registry <b>{escape(peer.get('registry', ''))}</b> · official program <code>{escape(peer.get('official_version', ''))}</code> · "
            f"labgate wall time {_secs(peer.get('labgate_seconds'))} · official wall time {_secs(peer.get('official_seconds'))}</p>"
            + _table(["area", "labgate", "labgate detail", "official", "official detail", "", "labgate's findings beyond the official checks"], rows)
            + '<p class="muted">Agreement is judged on the checks both make; what labgate checks beyond the official program is listed on the right.</p></section>'
        )

    tests = d.get("tests") or []
    cells = [r for t in tests for r in (t.get("extra") or {}).get("access", [])]
    if cells:
        parts.append(_access_grid(cells))
    oidc_rows = [(t, r) for t in tests for r in (t.get("extra") or {}).get("oidc", [])]
    if oidc_rows:
        rows = [[escape(r["case"]), escape(r["expected"]), escape(r["observed"]), _b(t["verdict"])] for t, r in oidc_rows]
        parts.append('<section class="oidc"><h2>OpenID Connect checks (what was sent, expected, what came back)</h2>'
                     + _table(["case", "expected", "observed", "verdict"], rows) + "</section>")
    adm_rows = [r for t in tests for r in (t.get("extra") or {}).get("admission", [])]
    if adm_rows:
        rows = []
        short = {"ClusterPolicy": "cpol", "ImageValidatingPolicy": "ivpol"}
        for r in sorted(adm_rows, key=lambda r: (r["case"][:1], int(r["case"][1:]) if r["case"][1:].isdigit() else 99,
                                                 r.get("policy", ""), r["object"])):
            ok = r["expected"] == r["observed"]
            observed = f'<span class="badge" style="background:{COLORS["pass" if ok else "fail"]}">{escape(r["observed"])}</span>'
            phase = r.get("phase") or ""
            good = phase in ("Running", "absent")
            phase_html = (f'<span class="badge" style="background:{COLORS["pass" if good else "fail"]}">{escape(phase)}</span>' if phase
                          else '<span class="muted">no nodes</span>')
            kind = r.get("policy", "")
            rows.append([f"<b>{escape(r['case'])}</b>", f'<span title="{escape(kind)}">{escape(short.get(kind, kind or "-"))}</span>', escape(r["object"]), f"<code>{escape(r['image'])}</code>", escape(r["expected"]),
                         observed, phase_html,
                         escape(r.get("message", "")) + (f"<br><span class=muted>stored as {escape(r['stored_image'])}</span>" if r.get("stored_image") and r["stored_image"] != r["image"] else "")])
        parts.append('<section class="adm"><h2>Admission cases</h2>'
                     + _table(["case", "policy", "object", "image", "expected", "observed", "pod", "Kyverno's message"], rows)
                     + '<p class="muted">pod: on a cluster with nodes an admitted pod must reach Running (pulled through the read-only robot\'s pull secret) '
                       'and a denied one must not exist; the local stack has an API server and no nodes. policy: the kind the case ran under, '
                       'cpol a ClusterPolicy verifyImages rule, ivpol an ImageValidatingPolicy</p></section>')

    events = sorted((r for t in tests for r in (t.get("extra") or {}).get("timeline", [])), key=lambda r: r["t"])
    if events:
        t0 = events[0]["t"]
        props = [e["propagation"] for e in events if "propagation" in e]
        rows = [[f"+{e['t'] - t0:7.2f} s", f"<b>{escape(e['case'])}</b>", escape(e["event"]),
                 _secs(e["propagation"]) if "propagation" in e else "", _secs(e["seconds"]) if "seconds" in e else ""] for e in events]
        head = ""
        if props:
            head = f"<p>policy update → enforcement: median {_secs(sorted(props)[len(props) // 2])}, max {_secs(max(props))} over {len(props)} measurements</p>"
        parts.append("<section><h2>Key rotation timeline</h2>" + head
                     + _table(["time", "step", "event", "update → enforcement", "policy Ready after"], rows, (3, 4)) + "</section>"
        )

    # skips and non-passing
    skipped = [t for t in tests if t["verdict"] in ("skip", "unsupported", "known")]
    if skipped:
        rows = [[escape(t["nodeid"]), _b(t["verdict"]), escape(t["message"])] for t in skipped]
        parts.append("<section><h2>Skipped, unsupported and known (each with its reason)</h2>" + _table(["test", "verdict", "reason and fix"], rows) + "</section>")

    rows = [[escape(t["nodeid"]), _b(t["verdict"]), escape(t.get("area") or ""), escape(t.get("spec") or ""), _secs(t["duration"]), escape(t["message"])] for t in tests]
    parts.append("<section><h2>All results</h2>" + _table(["test", "verdict", "area", "spec clause", "time", "message"], rows, (4,)) + "</section>")
    parts.append("</main>")
    return f"<!doctype html><html lang=en><head><meta charset=utf-8><title>labgate {escape(d['run_id'])}</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"


def _access_grid(cells: list[dict[str, Any]]) -> str:
    """The truth table as a grid: one row per identity and credential, one column per action and
    repository; each cell shows expected/observed and the answer, mismatches marked."""
    rows = list(dict.fromkeys(c["row"] for c in cells))
    order = ("catalog", "pull", "tags", "push", "delete", "apikey", "oidc-login")
    cols = sorted(dict.fromkeys(c["column"] for c in cells),
                  key=lambda col: (order.index(col.split()[0]) if col.split()[0] in order else 99, col))
    by = {(c["row"], c["column"]): c for c in cells}
    head = "<tr><th>identity</th>" + "".join(f"<th>{escape(col)}</th>" for col in cols) + "</tr>"
    body = []
    mismatches = 0
    for r in rows:
        tds = [f"<td><b>{escape(r)}</b></td>"]
        for col in cols:
            c = by.get((r, col))
            if c is None:
                tds.append('<td class="muted">-</td>')
                continue
            if c.get("not_enforced"):
                tds.append(f'<td title="{escape(c["why"])}" style="border-left:3px solid {COLORS["not-enforced"]}">'
                           f'{escape(c["expected"])} / <b>{escape(c["observed"])}</b> ⚠<br><span class="muted">{escape(c["answer"])} · not enforced by this registry</span></td>')
                continue
            if c["observed"] == "skip":
                tds.append(f'<td title="{escape(c["why"])}"><span class="muted">{escape(c["expected"])} / skipped</span></td>')
                continue
            ok = c["expected"] == c["observed"]
            mismatches += not ok
            color = COLORS["pass"] if ok else COLORS["fail"]
            mark = "" if ok else " ✗"
            tds.append(f'<td title="{escape(c["why"])}" style="border-left:3px solid {color}">'
                       f'{escape(c["expected"])} / <b>{escape(c["observed"])}</b>{mark}<br><span class="muted">{escape(c["answer"])}</span></td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    unenforced = sum(1 for c in cells if c.get("not_enforced"))
    note = (f'<p><b style="color:{COLORS["fail"]}">{mismatches} cell(s) where observed differs from expected</b></p>' if mismatches
            else "<p>every cell that ran matched its expectation</p>")
    if unenforced:
        note += (f'<p><b style="color:{COLORS["not-enforced"]}">{unenforced} deny cell(s) not enforced by this registry</b>: '
                 "it has no per-repository authorization, and the identity did what the scenario forbids</p>")
    return ("<section><h2>Access truth table (expected / observed)</h2>" + note
            + f'<table class="grid"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
            + '<p class="muted">hover a cell for the policy that decides it; skipped cells say why in the skip list below</p></section>')
