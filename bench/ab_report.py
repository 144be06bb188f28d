#!/usr/bin/env python3
"""bench/ab_report.py: per-variant medians of a peers.sh run made with
bench/ab_hook.sh (several `project` modes, labelled by ab-labels.txt) and the
ratios to HAProxy's median in the same run. Usage: ab_report.py RUN_DIR..."""
import json
import statistics
import sys
from collections import defaultdict


def load(run):
    labels = open(f"{run}/ab-labels.txt").read().split()
    rows = [json.loads(l) for l in open(f"{run}/results.jsonl") if l.startswith("{")]
    out = defaultdict(lambda: defaultdict(list))
    project_i = -1
    for r in rows:
        mode = r.get("mode")
        if mode == "project" and r.get("test") == "sanity":
            project_i += 1
        if mode == "project":
            mode = labels[project_i] if 0 <= project_i < len(labels) else "project?"
        t = r.get("test")
        if "error" in r:
            out[mode][t + " errors"].append(1)
            continue
        if t in ("newconn", "keepalive"):
            out[mode][t + " req/s"].append(r["rps"])
            out[mode][t + " p99 us"].append(r["lat_p99_us"])
        elif t == "iperf":
            out[mode]["iperf Gbit/s"].append(r["gbps"])
    return out


def main():
    for run in sys.argv[1:]:
        out = load(run)
        metrics = ["newconn req/s", "newconn p99 us", "keepalive req/s", "keepalive p99 us", "iperf Gbit/s"]
        print(f"## {run}")
        print("| variant | n | " + " | ".join(metrics) + " |")
        print("|---|---|" + "---|" * len(metrics))
        ha = {m: statistics.median(out["haproxy"][m]) for m in metrics if out["haproxy"].get(m)}
        for mode, vals in out.items():
            cells = []
            for m in metrics:
                v = vals.get(m)
                if not v:
                    cells.append("-")
                    continue
                med = statistics.median(v)
                ratio = f" ({med / ha[m]:.2f}x)" if m in ha and ha[m] and mode != "haproxy" else ""
                cells.append(f"{med:.4g}{ratio}")
            n = len(vals.get("newconn req/s", []) or vals.get("iperf Gbit/s", []))
            print(f"| {mode} | {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
