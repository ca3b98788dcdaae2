"""report.json and report.html for a dedup_corpus run (plain Python)."""

from __future__ import annotations

import collections
import html

import numpy as np

_BINS = 20


def build_report(counts: dict, duplicates: list, examples: list,
                 settings: dict) -> dict:
    """Assembles report.json from the job's gathered outputs.

    Args:
        counts: {"input", "unique", "dead_letters", "embedded"}, and
            "duplicates_of_index" when a dedup index was used (then
            "duplicates_within_run" is derived).
        duplicates: [(kind, similarity, duplicate_of)] for every duplicate.
        examples: [(kind, similarity, duplicate_text, kept_text)].
        settings: the thresholds and parameters used.
    """
    by_kind = collections.Counter(kind for kind, _, _ in duplicates)
    group_sizes = collections.Counter(
        collections.Counter(of for _, _, of in duplicates).values())
    histograms = {}
    for kind in sorted(set(by_kind) - {"exact"}):  # exact: always 1.0
        values = [s for k, s, _ in duplicates if k == kind]
        low = min(values + [settings.get(f"{kind}_threshold", 1.0)])
        edges = np.linspace(min(low, 1.0) - 1e-9, 1.0 + 1e-9, _BINS + 1)
        histograms[kind] = {"edges": edges.round(4).tolist(),
                            "counts": np.histogram(values, edges)[0].tolist()}
    within_run = ({"duplicates_within_run": sum(by_kind.values())
                   - counts["duplicates_of_index"]}
                  if "duplicates_of_index" in counts else {})
    return {
        "counts": {
            **counts,
            "duplicates": sum(by_kind.values()),
            **within_run,
            "duplicates_by_kind": {k: by_kind.get(k, 0) for k in
                                   ("exact", "lexical", "semantic")},
            "embeddings_avoided": by_kind.get("exact", 0)
            + by_kind.get("lexical", 0),
        },
        # group size (kept record + its direct duplicates) -> groups
        "group_sizes": {str(size + 1): n for size, n in
                        sorted(group_sizes.items())},
        "similarity_histograms": histograms,
        "settings": settings,
        "examples": [{"kind": k, "similarity": round(s, 4),
                      "duplicate": d, "kept": kept}
                     for k, s, d, kept in examples],
    }


def render_html(report: dict) -> str:
    """A self-contained page: histograms, group sizes, example pairs."""
    counts = report["counts"]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>Deduplication report"
        "</title><style>body{font:14px sans-serif;margin:2em;max-width:1000px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;vertical-align:top}th{background:#f3f3f3}"
        ".n{text-align:right}</style>",
        "<h1>Deduplication report</h1>",
        f"<p>{counts['input']:,} records in: {counts['unique']:,} kept, "
        f"{counts['duplicates']:,} duplicates, {counts['dead_letters']:,} "
        f"dead letters. {counts['embedded']:,} records embedded; "
        f"{counts['embeddings_avoided']:,} embeddings avoided by the exact "
        "and lexical stages." + (
            f" {counts['duplicates_of_index']:,} duplicates of records "
            "earlier runs kept (the index), "
            f"{counts['duplicates_within_run']:,} within this run."
            if _has_index(report) else "") + "</p>",
        _table(["kind", "duplicates"],
               [[k, f"{v:,}"] for k, v in
                counts["duplicates_by_kind"].items()]),
    ]
    settings = report["settings"]
    for kind, histogram in report["similarity_histograms"].items():
        parts.append(f"<h2>{kind.capitalize()} duplicates: similarity to "
                     "the kept record</h2>")
        parts.append(_histogram_svg(histogram["edges"], histogram["counts"],
                                    settings.get(f"{kind}_threshold")))
    if report["group_sizes"]:
        parts.append("<h2>Group sizes</h2>")
        sizes = report["group_sizes"]
        parts.append(_bars_svg(list(sizes), list(sizes.values()),
                               "records in group", "groups"))
    if report["examples"]:
        parts.append("<h2>Example pairs</h2>")
        parts.append(_table(
            ["kind", "similarity", "duplicate", "kept"],
            [[e["kind"], f"{e['similarity']:.3f}", e["duplicate"][:400],
              e["kept"][:400]] for e in report["examples"]]))
    parts.append("<h2>Settings</h2>")
    parts.append(_table(["setting", "value"],
                        [[k, str(v)] for k, v in settings.items()]))
    return "\n".join(parts)


def _has_index(report: dict) -> bool:
    return "index" in report["settings"]


def _table(header, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
        + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _histogram_svg(edges, counts, threshold):
    labels = [f"{edges[i]:.2f}" for i in range(len(counts))]
    svg = _bars_svg(labels, counts, "similarity", "duplicates",
                    marker=None if threshold is None else
                    (threshold - edges[0]) / (edges[-1] - edges[0]))
    return svg


def _bars_svg(labels, values, x_title, y_title, marker=None):
    width, height, pad = 640, 220, 40
    top = max(values) or 1
    bar = (width - 2 * pad) / max(len(values), 1)
    items = [f"<svg width='{width}' height='{height + 40}' "
             f"xmlns='http://www.w3.org/2000/svg' font-size='11'>"]
    for i, (label, value) in enumerate(zip(labels, values)):
        h = (height - pad) * value / top
        x = pad + i * bar
        items.append(f"<rect x='{x:.1f}' y='{height - h:.1f}' "
                     f"width='{bar * 0.9:.1f}' height='{h:.1f}' "
                     f"fill='#4878a8'><title>{html.escape(str(label))}: "
                     f"{value}</title></rect>")
        if len(labels) <= 12 or i % max(1, len(labels) // 10) == 0:
            items.append(f"<text x='{x:.1f}' y='{height + 14}'>"
                         f"{html.escape(str(label))}</text>")
    if marker is not None:
        x = pad + marker * (width - 2 * pad)
        items.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{pad / 2}' "
                     f"y2='{height}' stroke='#c33' stroke-width='2'/>"
                     f"<text x='{x + 4:.1f}' y='{pad / 2 + 10}' fill='#c33'>"
                     "threshold</text>")
    items.append(f"<text x='{width / 2:.0f}' y='{height + 32}'>"
                 f"{html.escape(x_title)}</text><text x='2' y='14'>"
                 f"{html.escape(y_title)} (max {top})</text></svg>")
    return "".join(items)
