"""`xgenmm-data check`: validate a whole mixture before a run and report every problem, per source.

Fatal problems (missing data files, unreadable JSON) are listed all at once and nothing else is checked.
Per record: no `conversations`, wrong role order, empty reply, `<image>` count != images, more than
`max_images`, unmapped relative image path, missing / 0-byte / non-image / truncated image file (decoded
fully unless `decode=False`), over-long text (exact with a tokenizer, else estimated at 4 characters per
token).

Images that the pipeline converts beyond a plain RGB copy (16-bit scaled to 8 bits, alpha or a transparent
colour dropped, CMYK, animated: first frame) are not errors; they are counted per source in `notes` and
listed below the problem table, so a user sees what happens to their pixels.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .processing import BadSample, image_info, open_image, prepare_conversations
from .sources import DataError, Mixture
from .templates import get_template

CHARS_PER_TOKEN = 4


@dataclass
class CheckReport:
    """What `check_data` found: fatal problems, records checked and problems counted per source."""

    fatal: list[str] = field(default_factory=list)
    records: Counter = field(default_factory=Counter)  # source -> records checked
    problems: dict = field(default_factory=lambda: defaultdict(Counter))  # source -> kind -> count
    examples: list[tuple[str, int, object, str]] = field(default_factory=list)
    notes: dict = field(default_factory=lambda: defaultdict(Counter))  # source -> image conversion -> count

    @property
    def num_problems(self) -> int:
        """Bad records found, over all sources and kinds."""
        return sum(sum(c.values()) for c in self.problems.values())

    @property
    def ok(self) -> bool:
        """True when the mixture loaded and no record is bad."""
        return not self.fatal and self.num_problems == 0

    def format(self, max_examples: int = 20) -> str:
        """The printable report: per-source table of records / bad / problem kinds, image conversions,
        and the first `max_examples` bad records (file, index, id, reason)."""
        if self.fatal:
            return "FATAL: the run cannot start:\n" + "\n".join(f"  {p}" for p in self.fatal)
        rows = [("source", "records", "bad", "problem", "count")]
        for src, n in self.records.items():
            kinds = self.problems.get(src) or Counter()
            bad = sum(kinds.values())
            if not kinds:
                rows.append((src, str(n), "0", "-", "0"))
            for k, (kind, c) in enumerate(kinds.most_common()):
                rows.append(
                    (
                        src if k == 0 else "",
                        str(n) if k == 0 else "",
                        str(bad) if k == 0 else "",
                        kind,
                        str(c),
                    )
                )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        total = sum(self.records.values())
        lines.append(f"\n{self.num_problems} problem(s) in {total} record(s)")
        for src, idx, rid, reason in self.examples[:max_examples]:
            lines.append(f"  {src} record {idx} (id={rid!r}): {reason}")
        if len(self.examples) > max_examples:
            lines.append(f"  ... and {len(self.examples) - max_examples} more")
        if self.notes:
            lines.append("\nimage conversions (not errors; what the pipeline does to these pixels):")
            for src, kinds in self.notes.items():
                for kind, c in kinds.most_common():
                    lines.append(f"  {src}: {c} x {kind}")
        return "\n".join(lines)


def _kind(reason: str) -> str:
    for key in (
        "record without conversations",
        "wrong role order",
        "empty reply",
        "bad conversation turn",
        "count",
        "max_images",
        "unmapped relative image path",
        "missing image file",
        "0-byte image file",
        "not an image",
        "unreadable image",
        "over-long text",
        "outside the first human turn",
        "in a record without images",
        "record is not a JSON object",
        "bad image entry",
    ):
        if key in reason:
            return {
                "count": "<image> count != images",
                "max_images": "more than max_images",
                "unreadable image": "truncated/unreadable image",
                "outside the first human turn": "<image> count != images",
                "in a record without images": "<image> count != images",
            }.get(key, key)
    return reason[:40]


def check_mixture(
    mixture: Mixture,
    tokenizer=None,
    template="phi_3",
    max_length: int = 2048,
    max_images: int = 4,
    decode: bool = True,
) -> CheckReport:
    """Check every record of `mixture` as `SupervisedDataset` would (turns, `<image>` rules, image files, and
    with a `tokenizer` the tokenized length and labels); counts problems per source instead of raising."""
    report = CheckReport()
    try:
        refs = mixture.load()
    except DataError as e:
        report.fatal = e.problems
        return report
    for ref in refs:
        report.records[ref.source] += 1
        try:
            conv = prepare_conversations(ref, max_images)
            for p in ref.images:
                _, note = image_info(p)
                if note:
                    report.notes[ref.source][note] += 1
                if decode:
                    open_image(p)
            text = get_template(ref.template or template, tokenizer).render(conv)
            if tokenizer is not None:
                n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
                if n > max_length:
                    raise BadSample(
                        f"over-long text: {n} tokens > max_length={max_length} (will be truncated)"
                    )
            elif len(text) > CHARS_PER_TOKEN * max_length:
                raise BadSample(
                    f"over-long text: ~{len(text) // CHARS_PER_TOKEN} tokens (estimated) > max_length={max_length}"
                )
        except BadSample as e:
            report.problems[ref.source][_kind(str(e))] += 1
            report.examples.append((ref.source, ref.index, ref.id, str(e)))
    return report


__all__ = ["CheckReport", "check_mixture"]
