"""Leaderboards from run records: one table per dataset, mean ± std over seeds, protocol columns,
the papers' own figures as reference rows, written as Markdown, CSV and one self-contained HTML page.

The board reads only run records (``<run_dir>/<name>/seed<k>/record.json``, one file per run, written
atomically), so records written by several machines into one shared ``run_dir`` merge by being there;
a corrupt or half-written record is skipped with a warning naming the file.
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import io
import json
import math
import os
import re
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ltbench.errors import LTBenchError
from ltbench.records import METRIC_COLUMNS
from ltbench.references import Reference, references_for
from ltbench.suite import Suite

#: the column a table is sorted by (default: its first metric column)
SORT_COLUMN = {"base_to_new": "HM"}
PROTOCOL_COLUMNS = [("backbone", "backbone"), ("pretrained", "pretraining"), ("input_size", "input"), ("epochs", "epochs"), ("group_rule", "groups")]
SCORE_NAME = {"multiclass": "accuracy", "multilabel": "AP", "base_to_new": "accuracy"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


# ---- records ----------------------------------------------------------------------------------------
def load_records(paths: list[Path]) -> list[dict[str, Any]]:
    """Records that parse and carry what the board needs; a corrupt or half-written one is skipped
    with a warning naming the file."""
    out = []
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            missing = [k for k in ("dataset", "task", "metrics", "protocol") if not record.get(k)]
            if missing:
                raise ValueError(f"no {'/'.join(missing)}")
            if record["task"] not in METRIC_COLUMNS or not isinstance(record["metrics"], dict):
                raise ValueError(f"task {record['task']!r} or metrics malformed")
        except (OSError, ValueError, UnicodeDecodeError) as e:
            warnings.warn(f"skipping run record {path}: {e}", stacklevel=2)
            continue
        record["_path"] = str(path)
        out.append(record)
    return out


def board_kind(record: dict[str, Any]) -> str:
    """The columns a record is shown with: its task, or ``base_to_new`` for a base-to-new run."""
    if (record.get("protocol") or {}).get("eval_protocol") == "base_to_new":
        return "base_to_new"
    return record["task"]


def protocol_mismatch(record: dict[str, Any], required: dict[str, Any]) -> Optional[str]:
    """The first protocol key on which a record differs from what its suite requires, as text."""
    proto = record.get("protocol") or {}
    for key, want in required.items():
        if proto.get(key) != want:
            return f"protocol {key} = {proto.get(key)!r}, the suite requires {want!r}"
    return None


def mean_std(values: list[Optional[float]]) -> tuple[float, float, int]:
    vals = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(vals) == 0:
        return float("nan"), float("nan"), 0
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"), len(vals)


def fmt(mean: float, std: float, scale: float = 100.0) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean * scale:.1f} ± {std * scale:.1f}" if math.isfinite(std) else f"{mean * scale:.1f}"


def table_key(dataset: str, imb_ratio: Any = None) -> str:
    return f"{dataset} (ρ = {imb_ratio:g})" if isinstance(imb_ratio, (int, float)) and not isinstance(imb_ratio, bool) else dataset


def _epochs(proto: dict[str, Any]) -> Any:
    stages = proto.get("stages") or []
    if len(stages) > 1 and all(isinstance(s, dict) and s.get("epochs") for s in stages):
        return "+".join(str(s["epochs"]) for s in stages)
    return proto.get("epochs")


def _protocol_cells(proto: dict[str, Any]) -> dict[str, Any]:
    out = {name: proto.get(key) for key, name in PROTOCOL_COLUMNS}
    out["epochs"] = _epochs(proto)
    return out


def _per_class(runs: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """Mean per-class score over seeds with the training counts (None when records disagree)."""
    pcs = [r.get("per_class") or {} for r in runs]
    counts = pcs[0].get("train_counts")
    scores = [pc.get("score") for pc in pcs if pc.get("train_counts") == counts and pc.get("score")]
    if not counts or not scores or any(len(s) != len(counts) for s in scores):
        return None
    arr = np.array([[np.nan if v is None else v for v in s] for s in scores], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(arr, axis=0)
    return {"train_counts": [int(c) for c in counts], "score": [None if not math.isfinite(v) else float(v) for v in mean], "class_names": pcs[0].get("class_names")}


def build_tables(records: list[dict[str, Any]], references: Optional[list[Reference]] = None) -> dict[str, dict[str, Any]]:
    """{table: {"dataset", "task", "rows": [...], "citations": [...]}}: a table per dataset (and
    imbalance ratio); an ltbench row aggregates one run label over seeds; each paper row follows the
    row of the config it belongs to."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        r = {**r, "task": board_kind(r)}
        key = table_key(r["dataset"], (r.get("protocol") or {}).get("imb_ratio"))
        groups[(key, r.get("label") or r["method"])].append(r)
    tables: dict[str, dict[str, Any]] = {}
    for (key, label), runs in sorted(groups.items()):
        task = runs[0]["task"]
        table = tables.setdefault(key, {"dataset": runs[0]["dataset"], "task": task, "rows": [], "citations": []})
        if task != table["task"]:
            warnings.warn(f"run {label}: task {task} in a {table['task']} table; skipped", stacklevel=2)
            continue
        row: dict[str, Any] = {
            "method": label, "source": "ltbench", "class": runs[0]["method"], "seeds": len({r.get("seed") for r in runs}),
            "config": runs[0].get("config_stem") or label, "records": [r["_path"] for r in runs if "_path" in r],
        }  # fmt: skip
        for mkey, name in METRIC_COLUMNS[task]:
            row[name] = mean_std([r["metrics"].get(mkey) for r in runs])
        cells = [_protocol_cells(r["protocol"]) for r in runs]
        for _, name in PROTOCOL_COLUMNS:  # seeds run under different protocols are shown, not hidden
            values = list(dict.fromkeys(json.dumps(c[name], default=str) for c in cells))
            row[name] = cells[0][name] if len(values) == 1 else "mixed: " + " / ".join(json.loads(v) if v.startswith('"') else v for v in values)
        row["train img/s"] = mean_std([(r.get("throughput") or {}).get("train_images_per_s") for r in runs])[0]
        row["per_class"] = _per_class(runs)
        table["rows"].append(row)
    for table in tables.values():
        first = SORT_COLUMN.get(table["task"], METRIC_COLUMNS[table["task"]][0][1])
        table["rows"].sort(key=lambda row: -np.nan_to_num(row[first][0], nan=-1))
    for ref in references or []:
        key = table_key(ref.dataset, ref.imb_ratio)
        table = tables.setdefault(key, {"dataset": ref.dataset, "task": ref.task, "rows": [], "citations": []})
        if ref.task != table["task"]:
            continue
        if ref.citation not in table["citations"]:
            table["citations"].append(ref.citation)
        row = {
            "method": ref.config, "source": "paper", "class": ref.method, "seeds": ref.runs, "config": ref.config,
            "cite": table["citations"].index(ref.citation) + 1, "records": [], "per_class": None, "train img/s": float("nan"),
        }  # fmt: skip
        for _, name in METRIC_COLUMNS[ref.task]:
            v = ref.metrics.get(name)
            row[name] = (v, float("nan"), ref.runs or 1) if v is not None else (float("nan"), float("nan"), 0)
        row.update(_protocol_cells(ref.protocol))
        ours = [i for i, r in enumerate(table["rows"]) if r["config"] == ref.config]
        at = ours[-1] + 1 if ours else len(table["rows"])
        while at < len(table["rows"]) and table["rows"][at]["source"] == "paper" and table["rows"][at]["config"] == ref.config:
            at += 1
        table["rows"].insert(at, row)
    return tables


# ---- text renderers --------------------------------------------------------------------------------
def _proto_text(name: str, v: Any) -> str:
    if v is None:
        return "?"
    if name == "pretraining":
        return "none" if v is False else ("yes" if v is True else str(v))
    return str(v)


def _source_text(row: dict[str, Any]) -> str:
    return f"paper [{row['cite']}]" if row["source"] == "paper" else "ltbench"


def _cells(row: dict[str, Any], task: str) -> list[str]:
    seeds = row["seeds"]
    cells = [row["method"], _source_text(row), "?" if seeds is None else str(seeds)]
    cells += [fmt(*row[name][:2]) for _, name in METRIC_COLUMNS[task]]
    cells += [_proto_text(name, row[name]) for _, name in PROTOCOL_COLUMNS]
    speed = row["train img/s"]
    cells.append(f"{speed:,.0f}" if math.isfinite(speed) else "—")
    return cells


def headers(task: str) -> list[str]:
    return ["method", "source", "seeds", *[n for _, n in METRIC_COLUMNS[task]], *[n for _, n in PROTOCOL_COLUMNS], "train img/s"]


def _provenance(records: list[dict[str, Any]]) -> list[str]:
    commits = Counter(
        (r.get("git") or {}).get("commit", "?")[:10] + ("+dirty" if (r.get("git") or {}).get("dirty") else "") if (r.get("git") or {}).get("commit") else "unknown"
        for r in records
    )
    devices = Counter(f"{(r.get('throughput') or {}).get('devices', '?')}×{(r.get('throughput') or {}).get('accelerator', '?')}" for r in records)
    versions = Counter(f"torch {(r.get('versions') or {}).get('torch', '?')}, lightning {(r.get('versions') or {}).get('lightning', '?')}" for r in records)
    lines = [
        f"{len(records)} run records; ltbench commits: " + ", ".join(f"{c} ({n})" for c, n in commits.most_common()),
        "versions: " + "; ".join(f"{v} ({n})" for v, n in versions.most_common()),
        "devices per run: " + ", ".join(f"{d} ({n})" for d, n in devices.most_common()),
    ]
    if len(commits) > 1:
        lines.append("note: the records come from more than one ltbench commit")
    return lines


def render_markdown(tables: dict[str, dict[str, Any]], title: str, notes: Optional[list[str]] = None, footer: Optional[list[str]] = None) -> str:
    lines = [f"# {title}", ""]
    lines += [*(notes or []), ""] if notes else []
    lines += [
        "Mean ± sample std over seeds, in %; `seeds` is the number of seeds (for paper rows, the runs the figure averages, ? if not stated).",
        "Groups from training counts (rule in the groups column); n/a = empty group or no figure; ? = not stated.",
        "Paper rows are the publications' own figures under their own protocol (columns on the right), cited below each table.",
        "",
    ]
    for key, table in tables.items():
        task = table["task"]
        lines += [f"## {key} ({task})", "", "| " + " | ".join(headers(task)) + " |", "|" + "---|" * len(headers(task))]
        lines += ["| " + " | ".join(_cells(row, task)) + " |" for row in table["rows"]]
        lines.append("")
        for i, c in enumerate(table["citations"], 1):
            lines.append(f"[{i}] {c}  ")
        if table["citations"]:
            lines.append("")
    if footer:
        lines += ["---", "", *[f"{f}  " for f in footer], ""]
    return "\n".join(lines)


def render_csv(tables: dict[str, dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["table", "dataset", "task", "method", "source", "seeds", "metric", "mean", "std", *[n for _, n in PROTOCOL_COLUMNS], "train_img_per_s", "citation"])
    for key, table in tables.items():
        task = table["task"]
        for row in table["rows"]:
            cite = table["citations"][row["cite"] - 1] if row["source"] == "paper" else ""
            for _, name in METRIC_COLUMNS[task]:
                mean, std, _ = row[name]
                writer.writerow([
                    key, table["dataset"], task, row["method"], row["source"], "" if row["seeds"] is None else row["seeds"], name,
                    "" if not math.isfinite(mean) else mean, "" if not math.isfinite(std) else std,
                    *["" if row[n] is None else row[n] for _, n in PROTOCOL_COLUMNS],
                    "" if not math.isfinite(row["train img/s"]) else row["train img/s"], cite,
                ])  # fmt: skip
    return buf.getvalue()


# ---- plots (inline SVG, no plotting library) ---------------------------------------------------------
def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _thresholds(rule: Any) -> tuple[Optional[float], Optional[float]]:
    m = re.fullmatch(r"many>=(\d+),few<=(\d+)", str(rule or ""))
    return (float(m.group(1)), float(m.group(2))) if m else (None, None)


def svg_per_class(table: dict[str, Any], colors: dict[str, str]) -> str:
    """Per-class score against training count (log axis), one colour per ltbench row: each class a
    dot, and the mean of the classes with the same count joined by a line."""
    rows = [r for r in table["rows"] if r["source"] == "ltbench" and r.get("per_class")]
    if not rows or table["task"] == "base_to_new":  # K shots for every class: no count axis to plot against
        return ""
    W, H, L, R, T, B = 660, 340, 52, 170, 26, 44
    counts = [c for r in rows for c in r["per_class"]["train_counts"]]
    lo, hi = math.log10(max(min(counts), 1)) - 0.1, math.log10(max(max(counts), 2)) + 0.1

    def x(c: float) -> float:
        return L + (math.log10(max(c, 1)) - lo) / (hi - lo) * (W - L - R)

    def y(v: float) -> float:
        return T + (1 - v) * (H - T - B)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="per-class {SCORE_NAME[table["task"]]} against training count">']
    many, few = _thresholds(rows[0].get("groups"))
    group_names = [n for _, n in METRIC_COLUMNS[table["task"]][1:]]
    if many is not None and few is not None:
        for edge in (few + 0.5, many - 0.5):
            if lo < math.log10(edge) < hi:
                out.append(f'<line x1="{x(edge):.1f}" y1="{T}" x2="{x(edge):.1f}" y2="{H - B}" stroke="#999" stroke-dasharray="4 3"/>')
        for name, a, b in ((group_names[2], 10**lo, few + 0.5), (group_names[1], few + 0.5, many - 0.5), (group_names[0], many - 0.5, 10**hi)):
            a, b = max(a, 10**lo), min(b, 10**hi)
            if a < b:
                out.append(f'<text x="{(x(a) + x(b)) / 2:.1f}" y="{T - 8}" font-size="11" fill="#666" text-anchor="middle">{_esc(name)}</text>')
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<line x1="{L}" y1="{y(v):.1f}" x2="{W - R}" y2="{y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{v * 100:.0f}</text>')
    for e in range(int(math.floor(lo)), int(math.ceil(hi)) + 1):
        for m in (1, 2, 5):
            c = m * 10**e
            if lo <= math.log10(c) <= hi:
                out.append(f'<line x1="{x(c):.1f}" y1="{H - B}" x2="{x(c):.1f}" y2="{H - B + 4}" stroke="#333"/>')
                out.append(f'<text x="{x(c):.1f}" y="{H - B + 16}" font-size="11" text-anchor="middle">{c:g}</text>')
    out.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 6}" font-size="12" text-anchor="middle">training images per class (log scale)</text>')
    out.append(f'<text x="14" y="{(T + H - B) / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {(T + H - B) / 2})">per-class {SCORE_NAME[table["task"]]} (%)</text>')
    for i, r in enumerate(rows):
        col = colors[r["method"]]
        pc = r["per_class"]
        by_count: dict[int, list[float]] = defaultdict(list)
        names = pc.get("class_names") or [str(k) for k in range(len(pc["score"]))]
        for k, (c, s) in enumerate(zip(pc["train_counts"], pc["score"])):
            if s is None:
                continue
            by_count[c].append(s)
            tip = f"{r['method']}: class {names[k] if k < len(names) else k}, {c} training images, {s * 100:.1f}"
            out.append(f'<circle cx="{x(c):.1f}" cy="{y(s):.1f}" r="3" fill="{col}" fill-opacity="0.55"><title>{_esc(tip)}</title></circle>')
        pts = " ".join(f"{x(c):.1f},{y(float(np.mean(v))):.1f}" for c, v in sorted(by_count.items()))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="1.6"/>')
        ly = T + 8 + i * 16
        out.append(f'<line x1="{W - R + 10}" y1="{ly}" x2="{W - R + 26}" y2="{ly}" stroke="{col}" stroke-width="3"/>')
        out.append(f'<text x="{W - R + 30}" y="{ly + 4}" font-size="11">{_esc(r["method"][:24])}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_group_bars(table: dict[str, Any], colors: dict[str, str]) -> str:
    """Grouped bars per shot group (and overall): one bar per row, ± std as a whisker; paper rows
    hatched in their config's colour."""
    rows = [r for r in table["rows"] if any(math.isfinite(r[n][0]) for _, n in METRIC_COLUMNS[table["task"]])]
    if not rows:
        return ""
    names = [n for _, n in METRIC_COLUMNS[table["task"]]]
    W, H, L, R, T, B = 660, 300, 44, 170, 12, 40
    gw = (W - L - R) / len(names)
    bw = min(22.0, (gw - 12) / len(rows))

    def y(v: float) -> float:
        return T + (1 - v) * (H - T - B)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="scores per shot group">']
    out.append('<defs><pattern id="hatch" width="5" height="5" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="5" stroke="#fff" stroke-width="2"/></pattern></defs>')
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<line x1="{L}" y1="{y(v):.1f}" x2="{W - R}" y2="{y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{v * 100:.0f}</text>')
    for g, name in enumerate(names):
        x0 = L + g * gw + (gw - bw * len(rows)) / 2
        out.append(f'<text x="{L + g * gw + gw / 2:.1f}" y="{H - B + 16}" font-size="12" text-anchor="middle">{_esc(name)}</text>')
        for i, r in enumerate(rows):
            mean, std, _ = r[name]
            if not math.isfinite(mean):
                continue
            col = colors.get(r["method"], "#999")
            bx = x0 + i * bw
            tip = f"{r['method']} ({_source_text(r)}), {name}: {fmt(mean, std)}"
            out.append(f'<rect x="{bx:.1f}" y="{y(mean):.1f}" width="{bw - 2:.1f}" height="{y(0) - y(mean):.1f}" fill="{col}"><title>{_esc(tip)}</title></rect>')
            if r["source"] == "paper":
                out.append(f'<rect x="{bx:.1f}" y="{y(mean):.1f}" width="{bw - 2:.1f}" height="{y(0) - y(mean):.1f}" fill="url(#hatch)"/>')
            if math.isfinite(std):
                cx = bx + (bw - 2) / 2
                out.append(f'<line x1="{cx:.1f}" y1="{y(min(mean + std, 1)):.1f}" x2="{cx:.1f}" y2="{y(max(mean - std, 0)):.1f}" stroke="#222"/>')
    out.append(f'<line x1="{L}" y1="{y(0):.1f}" x2="{W - R}" y2="{y(0):.1f}" stroke="#333"/>')
    out.append(f'<text x="12" y="{(T + H - B) / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 12 {(T + H - B) / 2})">{SCORE_NAME[table["task"]]} (%)</text>')
    for i, r in enumerate(rows):
        ly = T + 8 + i * 16
        col = colors.get(r["method"], "#999")
        out.append(f'<rect x="{W - R + 10}" y="{ly - 6}" width="14" height="10" fill="{col}"/>')
        if r["source"] == "paper":
            out.append(f'<rect x="{W - R + 10}" y="{ly - 6}" width="14" height="10" fill="url(#hatch)"/>')
        label = r["method"][:20] + (f" [{r['cite']}]" if r["source"] == "paper" else "")
        out.append(f'<text x="{W - R + 28}" y="{ly + 3}" font-size="11">{_esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


# ---- HTML ----------------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 .3em;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:right;white-space:nowrap}
th:first-child,td:first-child,td.t{text-align:left}
th{cursor:pointer;background:#f4f4f4;user-select:none}th:hover{background:#e8e8e8}
th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}
tr.paper td{color:#555;font-style:italic;background:#fafafa}
tbody.g{border-top:2px solid #ccc}
.cite{font-size:12px;color:#555}.note{color:#555}
figure{display:inline-block;margin:.5em 1em .5em 0}figcaption{font-size:12px;color:#555}
"""

_JS = """
document.querySelectorAll('table.board').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('asc');
      t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});
      th.classList.add(asc?'asc':'desc');
      var groups=Array.prototype.slice.call(t.querySelectorAll('tbody.g'));
      function key(g){var c=g.rows[0].cells[col];var v=c.getAttribute('data-v');
        if(v!==null&&v!==''){return parseFloat(v)}return c.textContent.trim().toLowerCase()}
      groups.sort(function(a,b){var x=key(a),y=key(b);
        var xn=typeof x==='number',yn=typeof y==='number';
        if(xn&&yn){return asc?x-y:y-x}if(xn){return -1}if(yn){return 1}
        return asc?(x<y?-1:x>y?1:0):(x<y?1:x>y?-1:0)});
      groups.forEach(function(g){t.appendChild(g)});
    });
  });
});
"""


def _html_row(row: dict[str, Any], task: str) -> str:
    cells = _cells(row, task)
    nums: list[Optional[float]] = [None, None, row["seeds"] if isinstance(row["seeds"], int) else None]
    nums += [row[name][0] if math.isfinite(row[name][0]) else None for _, name in METRIC_COLUMNS[task]]
    nums += [row[name] if isinstance(row[name], (int, float)) and not isinstance(row[name], bool) else None for _, name in PROTOCOL_COLUMNS]
    nums.append(row["train img/s"] if math.isfinite(row["train img/s"]) else None)
    tds = []
    for i, (c, v) in enumerate(zip(cells, nums)):
        attr = f' data-v="{v}"' if v is not None else (' data-v=""' if i >= 2 else "")
        cls = ' class="t"' if i in (0, 1) or (3 + len(METRIC_COLUMNS[task]) <= i < 3 + len(METRIC_COLUMNS[task]) + len(PROTOCOL_COLUMNS) and v is None) else ""
        title = f' title="{_esc(row["class"])}"' if i == 0 else ""
        tds.append(f"<td{cls}{attr}{title}>{_esc(c)}</td>")
    return f'<tr class="{row["source"]}">' + "".join(tds) + "</tr>"


def render_html(tables: dict[str, dict[str, Any]], title: str, notes: Optional[list[str]] = None, footer: Optional[list[str]] = None) -> str:
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>", f"<h1>{_esc(title)}</h1>",
    ]  # fmt: skip
    for n in notes or []:
        parts.append(f'<p class="note">{_esc(n)}</p>')
    parts.append(
        '<p class="note">Mean ± sample std over seeds, in %. Click a column to sort (a paper row stays under its ltbench row). '
        "Paper rows (italic) are the publications' own figures under their own protocol, cited under each table; ? = not stated; n/a = empty group or no figure.</p>"
    )
    for key, table in tables.items():
        task = table["task"]
        colors: dict[str, str] = {}
        for row in table["rows"]:
            if row["method"] not in colors:
                colors[row["method"]] = PALETTE[len(colors) % len(PALETTE)]
        parts.append(f"<h2>{_esc(key)} <small>({_esc(task)})</small></h2>")
        parts.append('<table class="board"><thead><tr>' + "".join(f"<th>{_esc(h)}</th>" for h in headers(task)) + "</tr></thead>")
        # rows grouped: each ltbench row with the paper rows that follow it for the same config
        groups: list[list[dict[str, Any]]] = []
        for row in table["rows"]:
            if row["source"] == "paper" and groups and groups[-1][0]["config"] == row["config"]:
                groups[-1].append(row)
            else:
                groups.append([row])
        for g in groups:
            parts.append('<tbody class="g">' + "".join(_html_row(r, task) for r in g) + "</tbody>")
        parts.append("</table>")
        for i, c in enumerate(table["citations"], 1):
            parts.append(f'<div class="cite">[{i}] {_esc(c)}</div>')
        per_class, bars = svg_per_class(table, colors), svg_group_bars(table, colors)
        if per_class:
            parts.append(f"<figure>{per_class}<figcaption>Per-class {SCORE_NAME[task]} against training count (mean over seeds); dashed lines: group boundaries.</figcaption></figure>")
        if bars:
            parts.append(f"<figure>{bars}<figcaption>{SCORE_NAME[task].capitalize()} per shot group, ± std over seeds; hatched: paper figures.</figcaption></figure>")
    if footer:
        parts.append("<hr>" + "".join(f'<div class="note">{_esc(f)}</div>' for f in footer))
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts)


# ---- a suite's board -------------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def suite_records(suite: Suite) -> tuple[list[dict[str, Any]], list[str]]:
    """The suite's readable, protocol-conforming records, and the runs that have none."""
    found, missing = [], []
    for entry, seed in suite.runs():
        path = suite.record_path(entry, seed)
        if path.exists():
            found.append((entry, path))
        else:
            missing.append(f"{entry.label} seed {seed}")
    records = []
    loaded = {r["_path"]: r for r in load_records([p for _, p in found])}
    for entry, path in found:
        r = loaded.get(str(path))
        if r is None:
            missing.append(f"{entry.label} (unreadable record {path})")
            continue
        why = protocol_mismatch(r, suite.protocol)
        if why:
            warnings.warn(f"skipping run record {path}: {why}", stacklevel=2)
            missing.append(f"{entry.label} (protocol differs: {path})")
            continue
        if r.get("partial_test"):
            warnings.warn(f"skipping run record {path}: scored {r.get('num_test_samples')} of {r.get('test_split_size')} test images", stacklevel=2)
            missing.append(f"{entry.label} (partial test, {r.get('num_test_samples')} of {r.get('test_split_size')} images: {path})")
            continue
        r["label"], r["config_stem"] = entry.label, entry.stem
        records.append(r)
    return records, missing


def render_suite(suite: Suite) -> dict[str, Path]:
    records, missing = suite_records(suite)
    refs = references_for(list(dict.fromkeys(e.stem for e in suite.entries))) if suite.references else []
    tables = build_tables(records, refs)
    title = f"ltbench leaderboard: {suite.name}"
    notes = [suite.description] if suite.description else []
    notes.append(f"Suite {suite.source or suite.name}: {len(suite.entries)} configs × seeds {suite.seeds}" + (f"; every run shares {json.dumps(suite.protocol)}" if suite.protocol else "") + ".")
    if missing:
        notes.append(f"Not yet recorded ({len(missing)} of {len(suite.runs())} runs): " + ", ".join(missing[:12]) + (" …" if len(missing) > 12 else "") + ".")
    footer = _provenance(records) + [f"rendered {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} by `ltbench leaderboard {suite.source or ''}`"]
    out = {"md": suite.output / "leaderboard.md", "csv": suite.output / "leaderboard.csv", "html": suite.output / "leaderboard.html"}
    _write(out["md"], render_markdown(tables, title, notes, footer))
    _write(out["csv"], render_csv(tables))
    _write(out["html"], render_html(tables, title, notes, footer))
    return out
