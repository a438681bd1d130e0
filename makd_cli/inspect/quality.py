"""Target quality (lavid.txt section 4.4 and issue 10): does the teacher separate the classes?"""

from __future__ import annotations

from makd_cli.formats.targets import read_targets
from makd_cli.inspect.views import ViewRequest, register_view
from makd_cli.quality import format_quality_table, quality_report


@register_view("quality", help="per-question entropy, class separation, teacher vs random codes")
def quality_view(req: ViewRequest) -> dict:
    t = read_targets(req.source)
    report = quality_report(t)
    drop = (req.options or {}).get("drop_low_entropy")
    if drop:
        from makd_cli.errors import MakdError

        if req.questions is None:
            raise MakdError("--drop-low-entropy needs --questions (the file to filter)")
        from makd_cli.select import drop_low_entropy

        report["dropped_low_entropy"] = drop_low_entropy(report, req.questions, drop)
    if not req.as_json:
        req.console.print(format_quality_table(report))
        if drop:
            d = report["dropped_low_entropy"]
            req.console.print(f"kept {d['kept']} questions, dropped {d['dropped']} low-entropy ones -> {d['output']}")
    return report
