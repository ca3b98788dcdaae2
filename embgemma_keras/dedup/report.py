"""report.json and report.html for a dedup_corpus run (plain Python).

What a run gathers at its end is a `RunTally`; `build_report` turns it,
with the settings and what the run was (`run`: model, input files, start),
into report.json, and `render_html` that into report.html.
"""

from __future__ import annotations

import collections
import html
import typing

import numpy as np

_BINS = 20
_FILES_LISTED = 20  # input files report.html names; report.json has all


class RunTally(typing.NamedTuple):
    """What a run's report counts, gathered once its outputs are written.

    `duplicates` holds `(kind, similarity, kept_id)` for every duplicate,
    `examples` `(kind, similarity, duplicate text, kept text)` for a few.
    """

    input: int  # lines read: records and dead letters
    unique: int
    dead_letters: int
    embedded: int
    duplicates: list[tuple[str, float, str]]
    examples: list[tuple[str, float, str, str]]
    output_files: int
    duplicates_of_index: int | None = None  # only with a dedup index
    index_version: str | None = None  # the version the run left current


def build_report(tally: RunTally, settings: dict, run: dict,
                 wall_secs: float) -> dict:
    """Assembles report.json.

    Args:
        tally: what the run gathered.
        settings: the thresholds and parameters used; with a dedup index,
            its "index" directory (then the counts say how many duplicates
            were of the index, and the settings its version).
        run: what the run was: its model and dtype, its input pattern and
            files, when it started.
        wall_secs: from the start of the run to its report.

    Example:

    >>> tally = RunTally(input=3, unique=2, dead_letters=0, embedded=0,
    ...                  duplicates=[("exact", 1.0, "a")], examples=[],
    ...                  output_files=3)
    >>> report = build_report(tally, {}, {"model": "no model"}, 2.0)
    >>> report["counts"]["duplicates"], report["run"]["records_per_sec"]
    (1, 1.5)
    """
    duplicates = tally.duplicates
    counts = {"input": tally.input, "unique": tally.unique,
              "dead_letters": tally.dead_letters, "embedded": tally.embedded}
    if "index" in settings:
        counts["duplicates_of_index"] = tally.duplicates_of_index
        settings = {**settings, "index_version": tally.index_version}
    by_kind = collections.Counter(kind for kind, _, _ in duplicates)
    group_sizes = collections.Counter(
        collections.Counter(kept for _, _, kept in duplicates).values())
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
        # group size (kept record + all its duplicates) -> groups
        "group_sizes": {str(size + 1): n for size, n in
                        sorted(group_sizes.items())},
        "similarity_histograms": histograms,
        "run": {**run, "wall_secs": round(wall_secs, 3),
                "records_per_sec": round(tally.input / wall_secs, 3)
                if wall_secs > 0 else None,
                "output_files": tally.output_files},
        "settings": settings,
        "examples": [{"kind": k, "similarity": round(s, 4),
                      "duplicate": d, "kept": kept}
                     for k, s, d, kept in tally.examples],
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
        "<h2>Run</h2>",
        _run_table(report["run"]),
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


def _run_table(run: dict) -> str:
    """What the run was: model, input, timing (a few files named)."""
    files = run["input_files"]
    named = ", ".join(files[:_FILES_LISTED]) + (
        f" and {len(files) - _FILES_LISTED:,} more"
        if len(files) > _FILES_LISTED else "")
    rate = run["records_per_sec"]
    return _table(["run", "value"], [
        ["model", run["model"]],
        ["dtype", run["dtype"] or "-"],
        ["input pattern", run["input_pattern"]],
        [f"input files ({len(files):,})", named],
        ["started (UTC)", run["started"]],
        ["wall time", f"{run['wall_secs']:,.1f} s"],
        ["records / s", "-" if rate is None else f"{rate:,.1f}"],
        ["output files", f"{run['output_files']:,}"],
    ])


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
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
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
