"""The webmail's forwarding and automatic reply as Sieve: a section that the
settings page writes into the mailbox's active script, between two marker
lines, so that the script a ManageSieve client lists and GETs is the one that
runs, and what the user wrote by hand around the section stays as written.

Pure text functions: ``settings_section`` writes the section for some
settings, ``with_section`` puts it into a script (or takes it out),
``section_of`` finds it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from apps.sieve.grammar import SieveSyntaxError, parse

BEGIN = "# BEGIN Mailhost settings"
END = "# END Mailhost settings"
_BEGIN_LINE = (BEGIN + " (written by the webmail's settings page, which replaces "
               "what is between these two lines when its settings are saved)")


@dataclass(frozen=True)
class AutoReply:
    """RFC 5230: what the webmail's automatic reply says, and when."""

    subject: str
    body: str
    start: date | None = None
    end: date | None = None


def quoted(text: str) -> str:
    """RFC 5228 §2.4.2: a quoted string; only '"' and '\\' are escaped, line
    breaks stay as they are (as CRLF, §2.4.2 allows them inside quotes)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"\r\n|\r|\n", "\r\n", escaped) + '"'


def settings_section(*, reply: AutoReply | None, forward_to: Sequence[str],
                     keep_copy: bool) -> str:
    """The section for these settings ("" when there is nothing to do). The
    reply comes first: forwarding without a copy ends the script (``stop``),
    since nothing is left to file here."""
    requires: list[str] = []
    lines: list[str] = []
    if reply is not None:
        requires.append("vacation")
        action = (f"vacation{' :subject ' + quoted(reply.subject) if reply.subject else ''}"
                  f" {quoted(reply.body)};")
        # RFC 5260 §5: the first and last day, compared as yyyy-mm-dd text.
        dates = [f'currentdate :value "{relation}" "date" "{day.isoformat()}"'
                 for relation, day in (("ge", reply.start), ("le", reply.end)) if day]
        if dates:
            requires += ["date", "relational"]
            test = dates[0] if len(dates) == 1 else f"allof({', '.join(dates)})"
            lines += [f"if {test} {{", f"    {action}", "}"]
        else:
            lines.append(action)
    if forward_to:
        if keep_copy:
            requires.append("copy")
        lines += [f"redirect{' :copy' if keep_copy else ''} {quoted(address)};"
                  for address in forward_to]
        if not keep_copy:
            lines.append("stop;")
    if not lines:
        return ""
    head = [f"require [{', '.join(quoted(name) for name in requires)}];"] if requires else []
    return "\r\n".join([_BEGIN_LINE, *head, *lines, END]) + "\r\n"


def _lines(text: str) -> list[str]:
    # RFC 5228 §2.2: lines end in CRLF; a bare LF is taken as well, and no
    # other character (``str.splitlines`` would break at U+2028 in a string).
    return re.split(r"\r?\n", text)


def _bounds(lines: list[str]) -> tuple[int, int] | None:
    """The indexes of the section's first and last line, if it is there."""
    begin = next((i for i, line in enumerate(lines) if line.startswith(BEGIN)), None)
    if begin is None:
        return None
    end = next((i for i in range(begin + 1, len(lines)) if lines[i].rstrip() == END), None)
    return None if end is None else (begin, end)


def section_of(script: str) -> str:
    """The section in a script, "" if it has none."""
    lines = _lines(script)
    bounds = _bounds(lines)
    return "" if bounds is None else "\r\n".join(lines[bounds[0]:bounds[1] + 1]) + "\r\n"


def with_section(script: str, section: str) -> str:
    """The script with its section replaced by ``section`` (taken out when it
    is ""). A new section goes after the script's own ``require`` commands:
    RFC 5228 §3.2 wants every require before any other command, and the
    section's own require is then one more of them. A script that does not
    parse gets it at the top."""
    lines = _lines(script)
    while lines and not lines[-1]:
        lines.pop()
    bounds = _bounds(lines)
    if bounds is not None:
        del lines[bounds[0]:bounds[1] + 1]
        at = bounds[0]
    else:
        at = min(_after_requires(script), len(lines))
    combined = lines[:at] + (_lines(section.removesuffix("\r\n")) if section else []) + lines[at:]
    return "\r\n".join(combined) + "\r\n" if combined else ""


def _after_requires(script: str) -> int:
    """The index of the line of the script's first command that is not a
    require (the line count when there is none)."""
    try:
        commands = parse(script)
    except SieveSyntaxError:
        return 0
    first = next((c for c in commands if c.name != "require"), None)
    return len(_lines(script)) if first is None else first.line - 1
