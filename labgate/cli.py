"""labgate command line: tools, stack, peer cross-check.

    labgate tools status                 every component: version and source, or the exact reason
    labgate tools install [NAME ...]     obtain components (a second run builds nothing)
    labgate stack up [--scenario F]      start the stack outside pytest, print its state file
    labgate stack status|down [--state F]  (down --all: every stack, and what dead runs left)
    labgate known list                   the known-issues quarantine: state, expiry, owner
    labgate peer [--scenario F]          run the official OCI conformance program against the stack
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from labgate import toolchain
from labgate.errors import LabgateError, StackError, UsageError

CURRENT = "current-stack"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2
        raise UsageError(f"{self.prog}: {message}", fix=f"see `{self.prog} --help`")


def _pointer() -> Path:
    return toolchain.cache_root() / CURRENT


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(2).hex()


def cmd_tools_status(args: argparse.Namespace) -> int:
    rows = toolchain.resolve_all()
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    print(f"{'COMPONENT':<16} {'VERSION':<40} {'SOURCE':<6} PATH / REASON")
    for r in rows:
        where = r.path + (f"  [{r.reported_version}]" if r.reported_version else "") if r.available else r.reason
        print(f"{r.name:<16} {r.version:<40} {(r.source if r.available else '-'):<6} {where}")
    print(f"\ncache: {toolchain.cache_root()}")
    return 0


def cmd_tools_install(args: argparse.Namespace) -> int:
    names = args.names or [n for n, t in toolchain.TOOLS.items() if not t.prebuilt_only]
    failed = broken = 0
    for n in names:
        t = toolchain.tool(n)  # validates the name
        t0 = time.monotonic()
        r = toolchain.install(n, force=args.force)
        took = time.monotonic() - t0
        if r.available:
            print(f"{n}: {r.source} {r.path} ({took:.1f}s)")
        else:
            failed += 1
            broken += bool(os.environ.get(t.env))  # an explicit variable that does not work is always an error
            print(f"labgate: {n}: {r.reason}", file=sys.stderr)
    return 3 if broken or (failed and args.strict) else 0


def cmd_stack_up(args: argparse.Namespace) -> int:
    from labgate import reaper
    from labgate.providers import get_provider
    from labgate.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    for line in reaper.reap():
        print(f"labgate: reaper: {line}", file=sys.stderr)
    # several stacks may run side by side (each on its own free ports); the newest is the default
    # for `stack status|down` without --state
    run_id = _new_run_id()
    report_dir = Path(args.reports) / run_id
    provider = get_provider(scenario, run_id=run_id, report_dir=str(report_dir), detached=True)
    stack = provider.up()
    _pointer().parent.mkdir(parents=True, exist_ok=True)
    _pointer().write_text(stack.state_file)
    print(f"stack up: {stack.provider} provider, {stack.registry_kind or 'no'} registry at {stack.registry_url}")
    print(f"state file: {stack.state_file}")
    print(f"attach: pytest suites/ --labgate-state {stack.state_file}")
    return 0


def _load_state(args: argparse.Namespace):
    from labgate.stack import Stack

    path = args.state or (_pointer().read_text().strip() if _pointer().exists() else "")
    if not path:
        raise StackError("no stack is up", fix="start one with `labgate stack up`")
    return Stack.load(path)


def cmd_stack_status(args: argparse.Namespace) -> int:
    from labgate import abilities

    stack = _load_state(args)
    print(f"run {stack.run_id}: scenario {stack.scenario_name}, provider {stack.provider}, arch {stack.arch}")
    health = abilities.of(stack).health()
    for c in stack.components:
        h = health.get(c.name)
        alive = "running" if h is None or h.alive else f"NOT RUNNING ({h.detail})"
        if c.planned:
            alive = c.planned
        where = f"pid {c.pid}" if c.pid else ""
        print(f"  {c.name:<15} {c.kind:<14} {c.reported_version or c.version:<40} {where:<10} {alive:<12} {c.url}")
    for name, why in stack.skipped_components.items():
        print(f"  {name:<15} not available: {why}")
    return 0 if all(h.alive for h in health.values()) else 1


def cmd_stack_down(args: argparse.Namespace) -> int:
    from labgate import abilities, reaper

    if args.all:
        said = reaper.reap(include_detached=True)
        for line in said:
            print(f"labgate: {line}")
        if _pointer().exists():
            _pointer().unlink()
        print(f"{len(said)} run(s) removed" if said else "nothing to remove")
        return 0
    stack = _load_state(args)
    done = abilities.of(stack).teardown()
    failed = [d for d in done if d.get("error")]
    if _pointer().exists() and _pointer().read_text().strip() == stack.state_file:
        _pointer().unlink()
    for d in failed:
        print(f"labgate: teardown step {d['step']} failed: {d['error']}", file=sys.stderr)
    print(f"stack {stack.run_id} stopped; logs in {stack.report_dir}/logs")
    return 1 if failed else 0


def cmd_known_list(args: argparse.Namespace) -> int:
    from labgate.report import known

    rows = known.listing()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':<52} {'STATE':<13} {'EXPIRES':<11} {'OWNER':<16} TESTS  MATCH")
    for r in rows:
        print(f"{r['id']:<52} {r['state']:<13} {r['expires']:<11} {r['owner']:<16} {r['tests']:>5}  {r['match']}")
    expired = [r for r in rows if r["state"] == "expired"]
    if expired:
        print(f"\n{len(expired)} expired: a run fails until each is re-checked and renewed or removed", file=sys.stderr)
    return 1 if expired else 0


def cmd_peer(args: argparse.Namespace) -> int:
    from labgate.peer import run_peer

    return run_peer(scenario_path=args.scenario, reports=Path(args.reports), labgate_args=args.pytest_args)


def cmd_matrix(args: argparse.Namespace) -> int:
    from labgate import matrix

    if args.sub == "page":
        print(f"cross-cell page: {matrix.write_page(Path(args.reports))}")
        return 0
    m = matrix.load_matrix(args.matrix)
    if args.sub == "render":
        changed = matrix.render(m, check=args.check)
        for rel in changed:
            print(f"{rel}: {'differs from' if args.check else 'rendered from'} {args.matrix}")
        return 1 if changed and args.check else 0
    return matrix.run(m, args.cell, Path(args.reports), args.pytest_args)


def cmd_gate(args: argparse.Namespace) -> int:
    from labgate import gate

    if args.helmreleases:
        if args.from_ or args.to:
            raise UsageError("--helmreleases takes the versions from git: give --base and --head, not --from/--to")
        if not (args.base and args.head):
            raise UsageError("--helmreleases needs --base REF and --head REF")
        from labgate import gitops

        bump = gitops.bump(args.helmreleases, args.base, args.head, args.under)
        for ch in bump.changes():
            print(f"labgate gate: {' '.join(f'{k}={v}' for k, v in ch.items())}", file=sys.stderr)
        dest = Path(args.reports) / "gate-scenarios"
        base = Path(args.scenario)
        from_path = gate.scenario_for_release(base, bump.versions("base"), dest, f"base-{args.base}".replace("/", "-"))
        to_path = gate.scenario_for_release(base, bump.versions("head"), dest, f"head-{args.head}".replace("/", "-"))
        label = f"{args.helmreleases} {args.base}..{args.head}"
    else:
        if not (args.from_ and args.to):
            raise UsageError("labgate gate needs --from SCENARIO and --to SCENARIO (or --helmreleases DIR --base REF --head REF)")
        from_path, to_path, label = args.from_, args.to, ""
    return gate.run(from_path, to_path, provider=args.provider, reports=args.reports, suites=args.suites or None,
                    pytest_args=args.pytest_args, label=label)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="labgate", description="end-to-end conformance harness for zot + Pocket ID + Kyverno + cosign")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    tools = sub.add_parser("tools", help="component binaries")
    tsub = tools.add_subparsers(dest="sub", required=True, parser_class=_Parser)
    st = tsub.add_parser("status", help="version and source of every component, or why it is unavailable")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_tools_status)
    ins = tsub.add_parser("install", help="obtain components through the package registries")
    ins.add_argument("names", nargs="*", metavar="NAME")
    ins.add_argument("--force", action="store_true", help="rebuild even when cached")
    ins.add_argument("--strict", action="store_true", help="exit 3 when a component cannot be obtained")
    ins.set_defaults(func=cmd_tools_install)

    stack = sub.add_parser("stack", help="run the stack outside pytest")
    ssub = stack.add_subparsers(dest="sub", required=True, parser_class=_Parser)
    up = ssub.add_parser("up")
    up.add_argument("--scenario", default="scenarios/local.yaml")
    up.add_argument("--reports", default="reports")
    up.set_defaults(func=cmd_stack_up)
    for name, fn in (("status", cmd_stack_status), ("down", cmd_stack_down)):
        s = ssub.add_parser(name)
        s.add_argument("--state", default=None, help="state file (default: the stack `labgate stack up` started)")
        if name == "down":
            s.add_argument("--all", action="store_true", help="every stack labgate started here, and what dead runs left")
        s.set_defaults(func=fn)

    kn = sub.add_parser("known", help="the known-issues quarantine (suites/known-issues.yaml)")
    ksub = kn.add_subparsers(dest="sub", required=True, parser_class=_Parser)
    kl = ksub.add_parser("list", help="every known issue with its state, expiry and owner")
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(func=cmd_known_list)

    peer = sub.add_parser("peer", help="labgate's OCI suite and the official conformance program, side by side")
    peer.add_argument("--scenario", default="scenarios/local.yaml")
    peer.add_argument("--reports", default="reports")
    peer.add_argument("pytest_args", nargs="*", help="extra pytest arguments for labgate's run")
    peer.set_defaults(func=cmd_peer)

    mx = sub.add_parser("matrix", help="the nightly matrix (scenarios/matrix.yaml)")
    msub = mx.add_subparsers(dest="sub", required=True, parser_class=_Parser)
    mrun = msub.add_parser("run", help="run cells here, one after another, then write the cross-cell page")
    mrun.add_argument("--cell", action="append", default=[], help="a cell by name (repeatable; default: every cell)")
    mrun.add_argument("--reports", default="reports/matrix")
    mrun.add_argument("pytest_args", nargs="*", help="extra pytest arguments for every cell")
    mren = msub.add_parser("render", help="write .github/workflows/nightly.yml from the matrix")
    mren.add_argument("--check", action="store_true", help="only compare; exit 1 when the committed workflow differs")
    for sp in (mrun, mren):
        sp.add_argument("--matrix", default="scenarios/matrix.yaml")
    mpage = msub.add_parser("page", help="the cross-cell page from the cells' reports")
    mpage.add_argument("--reports", default="reports/matrix")
    for sp in (mrun, mren, mpage):
        sp.set_defaults(func=cmd_matrix)

    g = sub.add_parser("gate", help="the chart-bump gate: baseline at FROM, seeded state, upgrade in place under probes, candidate at TO, the diff")
    g.add_argument("--from", dest="from_", metavar="SCENARIO", help="the stack as it is (a scenario file)")
    g.add_argument("--to", metavar="SCENARIO", help="the stack after the bump (a scenario file)")
    g.add_argument("--provider", choices=["local", "kind"], default=None, help="run both sides on this provider")
    g.add_argument("--helmreleases", metavar="DIR", help="a git repository holding Flux HelmRelease files (instead of --from/--to)")
    g.add_argument("--base", metavar="REF", help="with --helmreleases: the ref as it is")
    g.add_argument("--head", metavar="REF", help="with --helmreleases: the ref with the bump")
    g.add_argument("--under", default=".", help="with --helmreleases: the folder holding them")
    g.add_argument("--scenario", default="scenarios/local.yaml", help="with --helmreleases: the stack the versions apply to")
    g.add_argument("--suites", action="append", default=[], metavar="PATH", help="suites to judge (repeatable; default: suites/)")
    g.add_argument("--reports", default="reports")
    g.add_argument("pytest_args", nargs="*", help="extra pytest arguments for both suite runs")
    g.set_defaults(func=cmd_gate)
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    import signal

    signal.signal(signal.SIGTERM, _interrupt)  # a half-started stack is torn down on SIGTERM as on Ctrl-C
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except LabgateError as exc:
        print(f"labgate: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("labgate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
