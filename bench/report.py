"""Rendering a run: a Markdown table for people, a JSON document for machines.

The original server's figures (measured on the same kind of machine with the same kind of
client) are printed next to each workload they exist for, so a run reads as a comparison."""

from __future__ import annotations

import re

from .client import Measurement

# Figures of the original TypeScript server: 32 concurrent keep-alive connections, 2 cores.
ORIGINAL = {
    "create_task": "~2,600 ops/s, p99 ~25 ms",
    "get_task": "~8,000 ops/s, p99 ~10-12 ms",
    "patch": "~3,500 ops/s, p99 ~16-20 ms",
    "create_session": "~1,050 ops/s, p99 ~50 ms",
    "timeline_append": "~2,300 ops/s, p99 ~30 ms",
    "list_all_50k": "p50 ~157 ms (22 MB)",
    "list_filtered_c32_50k": "~240 ops/s",
    "ws_fanout_50": "p50 ~1.5 ms, p99 ~5-7 ms, none lost",
}
ORIGINAL_LIST_P50 = {1_000: "p50 0.7 ms", 10_000: "p50 1.2 ms", 50_000: "p50 4.2 ms"}


def _near(n: int, level: int) -> bool:
    return abs(n - level) <= level * 0.1


def original_figure(m: Measurement) -> str:
    key = m.key
    if key in ("create_task", "seed_large", "seed_small"):
        return ORIGINAL["create_task"]
    if key.startswith("get_task"):
        return ORIGINAL["get_task"]
    if key.startswith("patch"):
        return ORIGINAL["patch"]
    if key in ("create_session", "timeline_append", "ws_fanout_50"):
        return ORIGINAL[key]
    found = re.match(r"list_filtered_(\d+)_c(\d+)$", key)
    if found:
        total, conns = int(found[1]), int(found[2])
        if conns == 1:
            return next((v for level, v in ORIGINAL_LIST_P50.items() if _near(total, level)), "")
        return ORIGINAL["list_filtered_c32_50k"] if _near(total, 50_000) else ""
    found = re.match(r"list_all_(\d+)$", key)
    if found and _near(int(found[1]), 50_000):
        return ORIGINAL["list_all_50k"]
    return ""


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _share(cpu: float | None, seconds: float) -> str:
    if cpu is None or not seconds:
        return "-"
    return f"{100.0 * cpu / seconds:.0f}%"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def markdown(results: list[Measurement], memory: dict, consistency: dict | None,
             info: dict) -> str:
    """The figures as a Markdown table followed by memory and consistency notes."""
    lines = [
        ("| workload | ops/s | p50 ms | p99 ms | client CPU | server CPU | other CPU | original "
         "| notes |"),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for m in results:
        notes = list(m.notes)
        if m.errors:
            notes.append(f"{m.errors} errors, first: {m.first_error}")
        lines.append(
            f"| {m.name} | {_num(m.ops_per_s, 0)} | {_ms(m.p(0.5))} | {_ms(m.p(0.99))} | "
            f"{_share(m.client_cpu, m.seconds)} | {_share(m.server_cpu, m.seconds)} | "
            f"{_share(m.other_cpu, m.seconds)} | "
            f"{original_figure(m)} | {'; '.join(notes)} |")
    out = ["\n".join(lines), ""]
    out.append("CPU columns: CPU time over wall time of the workload, in % of one core "
               f"(this machine has {info.get('cpus', '?')} cores); other CPU = every other "
               "process of the machine (with --pid): well above a few % means the figures of "
               "that row are disturbed.")
    server_cpu = info.get("total_server_cpu_s")
    out.append(f"Run: {info.get('total_seconds', '?')} s wall; client CPU "
               f"{info.get('total_client_cpu_s', '?')} s; server CPU "
               f"{'-' if server_cpu is None else server_cpu} s; tasks "
               f"{info.get('tasks_at_start', 0):,} -> {info.get('tasks_at_end', 0):,}; "
               f"load average {info.get('loadavg_at_start', '?')} at start, "
               f"{info.get('loadavg_at_end', '?')} at the end.")
    if (info.get("loadavg_at_start") or 0) > 1.0:
        out.append("WARNING: the machine was busy before the run started (load average > 1); "
                   "other processes share the cores, so these figures understate the server.")
    if any(v is not None for v in memory.values()):
        rss = ", ".join(f"{label}: {v:.0f} MB" for label, v in memory.items() if v is not None)
        out.append(f"Server RSS: {rss} (original: 60 MB empty, 256 MB at 50k tasks).")
    else:
        out.append("Server RSS: not measured (pass --pid).")
    if consistency:
        if "skipped" in consistency:
            out.append(f"On-disk consistency: skipped ({consistency['skipped']}).")
        else:
            c = consistency
            out.append(
                f"On-disk consistency: file == GET immediately after "
                f"{c['file_equals_get_immediately']}/{c['rounds']} bursts"
                f" (later: {c['file_equals_get_later']}, never: {c['file_never_equals_get']});"
                f" concurrent reads torn {c['torn_reads']}/{c['concurrent_reads']}, missing "
                f"{c['missing_reads']}; torn *.json files {c['torn_files']} of "
                f"{c['json_files']:,}; leftover temp files {c['temp_files']}.")
    return "\n".join(out)


def document(results: list[Measurement], memory: dict, consistency: dict | None,
             info: dict) -> dict:
    """The whole run as one JSON-ready dict."""
    rows = []
    for m in results:
        row = m.as_dict()
        row["original"] = original_figure(m) or None
        rows.append(row)
    return {"info": info, "results": rows, "rss_mb": memory, "consistency": consistency}
