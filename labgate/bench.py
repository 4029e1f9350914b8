"""Benchmarks: warm stack-up time per component and teardown time, measured, not asserted.

    python -m labgate.bench --scenario scenarios/local.yaml --rounds 5

Writes reports/benchmarks.json and prints median / max per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

from labgate.providers import get_provider
from labgate.scenario import load_scenario


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="labgate-bench")
    p.add_argument("--scenario", default="scenarios/local.yaml")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="reports/benchmarks.json")
    args = p.parse_args(argv)
    scenario = load_scenario(args.scenario)
    samples: dict[str, list[float]] = {}
    for i in range(args.rounds):
        run_id = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{i}"
        provider = get_provider(scenario, run_id=run_id, report_dir=f"/tmp/labgate-bench/{run_id}")
        t0 = time.monotonic()
        stack = provider.up()
        samples.setdefault("stack-up", []).append(time.monotonic() - t0)
        for k, v in stack.timings.items():
            samples.setdefault(k, []).append(v)
        t1 = time.monotonic()
        provider.down()
        samples.setdefault("teardown", []).append(time.monotonic() - t1)
    figures = {
        k: {"median_s": round(statistics.median(v), 4), "max_s": round(max(v), 4), "rounds": len(v)}
        for k, v in samples.items()
    }
    result = {
        "scenario": scenario.name,
        "measured": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "harness_max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "figures": figures,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for k, f in figures.items():
        print(f"{k:<20} median {f['median_s'] * 1000:8.1f} ms   max {f['max_s'] * 1000:8.1f} ms   ({f['rounds']} rounds)")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
