"""side_by_side.py --html FILE: the comparison as one page to project in a workshop.

One self-contained HTML file, no network and no JavaScript: the table of side_by_side.py and
bar charts drawn as inline SVG (start time and memory, one instance and N at once, containers
against VMs). Every number on it was measured by that run; the page only draws them.
"""
import html

CONTAINER_COLOUR, VM_COLOUR = "#2b7bb9", "#d9822b"
STYLE = """
body { font: 15px/1.4 sans-serif; margin: 2em; color: #222; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 .2em; }
table { border-collapse: collapse; margin: 1.5em 0; width: 100%; }
th, td { border: 1px solid #ccc; padding: .35em .6em; text-align: left; vertical-align: top; }
th.group { background: #eee; }
td.item { padding-left: 1.4em; white-space: nowrap; }
.charts { display: flex; flex-wrap: wrap; gap: 2em; }
"""
MIB = 1024 * 1024
# (title, the numbers' key, unit, scale, how many instances): bars of container, then VM
CHARTS = [("Time to first instruction, one instance", "start_seconds", "s", 1, False),
          ("Memory of one instance", "memory_bytes", "MiB", MIB, False),
          ("{n} started at once: time until all run", "many_seconds", "s", 1, True),
          ("{n} running at once: memory together", "many_memory_bytes", "MiB", MIB, True)]


def bar_chart(title, bars, unit, width=420, bar_height=34):
    """An SVG bar chart: bars is [(label, value or None, colour)]; None draws no bar."""
    top, left, gap = 34, 120, 12
    height = top + len(bars) * (bar_height + gap)
    longest = max([value for _, value, _ in bars if value is not None] or [1]) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="{html.escape(title)}">',
           f'<text x="0" y="20" font-size="15" font-weight="bold">{html.escape(title)}</text>']
    for index, (label, value, colour) in enumerate(bars):
        y = top + index * (bar_height + gap)
        out.append(f'<text x="0" y="{y + bar_height * 0.65:.0f}" font-size="14">'
                   f'{html.escape(label)}</text>')
        if value is None:
            out.append(f'<text x="{left}" y="{y + bar_height * 0.65:.0f}" font-size="14" '
                       'fill="#888">not measured</text>')
            continue
        length = max(2, (width - left - 90) * value / longest)
        out.append(f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar_height}" '
                   f'fill="{colour}"/>')
        out.append(f'<text x="{left + length + 6:.1f}" y="{y + bar_height * 0.65:.0f}" '
                   f'font-size="14">{value:.2f} {unit}</text>')
    return "\n".join(out + ["</svg>"])


def page(rows, numbers, instances, footnote):
    """The HTML page: rows as side_by_side.table_rows() gives them; numbers:
    {"container": {...}, "vm": {...}} with the keys of CHARTS (missing keys: not measured)."""
    body = ["<tr><th></th><th>Container (minibox)</th><th>VM (minivm)</th></tr>"]
    group = None
    for row in rows:
        if row["group"] != group:
            group = row["group"]
            body.append(f'<tr><th class="group" colspan="3">{html.escape(group)}</th></tr>')
        body.append(f'<tr><td class="item">{html.escape(row["item"])}</td>'
                    f'<td>{html.escape(row["container"])}</td><td>{html.escape(row["vm"])}</td></tr>')
    charts = []
    for title, key, unit, scale, many in CHARTS:
        values = [numbers[side].get(key) for side in ("container", "vm")]
        values = [None if value is None else value / scale for value in values]
        plural = "s" if instances > 1 else ""
        labels = (f"{instances} container{plural}", f"{instances} VM{plural}") if many \
            else ("container", "VM")
        charts.append(bar_chart(title.format(n=instances), [
            (labels[0], values[0], CONTAINER_COLOUR), (labels[1], values[1], VM_COLOUR)], unit))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>Containers and VMs, side by side</title>", f"<style>{STYLE}</style>",
        "</head><body>", "<h1>Containers and VMs, side by side</h1>",
        f"<p>{html.escape(footnote)}</p>", '<div class="charts">', *charts, "</div>",
        "<table>", *body, "</table>", "</body></html>", ""])
