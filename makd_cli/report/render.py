"""A report's sections as one self-contained HTML page (pictures inlined as base64 PNG, styles inline,
no script, nothing fetched) or as Markdown with its pictures in a folder beside it."""

from __future__ import annotations

import base64
import datetime as _dt
from pathlib import Path

import jinja2

from makd_cli import __version__
from makd_cli.fileio import atomic_path, atomic_write_text

HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta, .note { color: #666; font-size: .9em; }
table { border-collapse: collapse; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
code.cmd { display: block; background: #f6f6f6; border-left: 3px solid #888; padding: .4em .7em; white-space: pre-wrap; font-size: .88em; }
pre { background: #fafafa; border: 1px solid #eee; padding: .6em; overflow-x: auto; font-size: .8em; }
img { max-width: 100%; height: auto; display: block; margin: .6em 0; }
nav a { margin-right: 1em; }
</style></head>
<body>
<h1>{{ title }}</h1>
<p class="meta">makd {{ version }}, {{ when }}. Runs: {{ runs | join(", ") }}</p>
<nav>{% for s in sections %}<a href="#s{{ loop.index }}">{{ s.title }}</a>{% endfor %}</nav>
{% for s in sections %}
<section id="s{{ loop.index }}">
<h2>{{ s.title }}</h2>
{% if s.text %}<p>{{ s.text }}</p>{% endif %}
<p class="note">Reproduce this section:</p><code class="cmd">{{ s.command }}</code>
{% for t in s.tables %}
<table><thead><tr>{% for h in t.head %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in t.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{% if t.get("note") %}<p class="note">{{ t.note }}</p>{% endif %}
{% endfor %}
{% for im in s.images %}<img alt="{{ im.alt }}" src="data:image/png;base64,{{ im.b64 }}">{% endfor %}
{% for p in s.pre %}<pre>{{ p }}</pre>{% endfor %}
</section>
{% endfor %}
</body></html>
"""

MARKDOWN = """# {{ title }}

makd {{ version }}, {{ when }}. Runs: {{ runs | join(", ") }}
{% for s in sections %}
## {{ s.title }}
{% if s.text %}
{{ s.text }}
{% endif %}
Reproduce this section:

```
{{ s.command }}
```
{% for t in s.tables %}
| {{ t.head | map("cell") | join(" | ") }} |
|{% for h in t.head %}---|{% endfor %}
{% for row in t.rows %}| {{ row | map("cell") | join(" | ") }} |
{% endfor %}{% if t.get("note") %}
{{ t.note }}
{% endif %}{% endfor %}
{% for im in s.images %}![{{ im.alt }}]({{ im.path }})
{% endfor %}{% for p in s.pre %}
```
{{ p }}
```
{% endfor %}{% endfor %}"""


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(autoescape=autoescape, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["cell"] = lambda c: str(c).replace("|", "\\|")
    return env


def render_report(sections, output: Path, fmt: str, runs) -> list[Path]:
    """Writes the report (atomically); returns every file written."""
    output = Path(output)
    context = {"title": "makd report", "version": __version__, "runs": [str(r) for r in runs],
               "when": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if fmt == "html":
        for s in sections:
            for im in s.images:
                im["b64"] = base64.b64encode(im["png"]).decode("ascii")
        atomic_write_text(output, _env(True).from_string(HTML).render(sections=sections, **context))
        return [output]
    folder = output.with_name(output.stem + "_files")  # pictures beside the Markdown, linked relatively
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for s in sections:
        for im in s.images:
            path = folder / im["name"]
            with atomic_path(path, suffix=".png") as tmp:
                Path(tmp).write_bytes(im["png"])
            im["path"] = f"{folder.name}/{im['name']}"
            written.append(path)
    atomic_write_text(output, _env(False).from_string(MARKDOWN).render(sections=sections, **context))
    return [output, *written]
