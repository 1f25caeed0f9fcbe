"""Running a compiled Sieve script over one message for one recipient
(RFC 5228 §§2.10, 4, 5 and the extensions in ``commands.EXTENSIONS``).

Pure: the message is bytes and an envelope; the result is an ``Outcome``
(where to file with which flags, where to redirect, whether to answer with a
vacation reply, whether the script asked to reject). The caller does what it
says (``apps.sieve.services``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from functools import cached_property

from apps.sieve.grammar import Argument, Command, Strings, Test

INBOX = "INBOX"


@dataclass(frozen=True)
class Envelope:
    sender: str  # the MAIL FROM, "" for the null sender
    recipient: str  # the RCPT TO this delivery is for
    subaddress_delimiter: str = "+"


@dataclass(frozen=True)
class VacationRequest:
    """RFC 5230 §4: what the script's vacation action asked for."""

    reason: str
    days: int | None
    subject: str
    sender: str  # :from
    addresses: tuple[str, ...]
    handle: str
    mime: bool


@dataclass
class Outcome:
    # (folder, flags) in order, one per folder (RFC 5228 §4.1: filing into
    # the same folder twice files once).
    filings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    redirects: list[str] = field(default_factory=list)
    vacation: VacationRequest | None = None
    # RFC 5429: the reason given to reject/ereject.
    rejection: str | None = None
    # Runtime errors are logged by the caller, and the message kept (RFC 5228 §2.10.6).
    error: str = ""


class _Stop(Exception):
    pass


class SieveRuntimeError(Exception):
    pass


_WITH_REJECT = "reject cannot be combined with keep, fileinto or vacation"
_MAX_REDIRECTS = 10  # per script run (RFC 5228 §4.2 lets the site limit them)
_MAX_VARIABLE = 4000  # characters a variable may hold (RFC 5229 §6)


class _Run:
    def __init__(self, data: bytes, envelope: Envelope, loaded: set[str],
                 now: datetime) -> None:
        self.data = data
        self.envelope = envelope
        self.now = now
        self.loaded = loaded
        # The header fields only: most scripts never read the body, and
        # parsing every MIME part cost more than running the script.
        self.message: Message = BytesHeaderParser(policy=compat32).parsebytes(data)
        self.outcome = Outcome()
        self.implicit_keep = True
        self.flags: list[str] = []  # imap4flags' internal variable (RFC 5232 §3)
        self.variables: dict[str, str] = {}
        self.match_groups: list[str] = []

    # --- strings and variables (RFC 5229 §3) -------------------------------------
    def expand(self, text: str) -> str:
        if "variables" not in self.loaded or "${" not in text:
            return text
        return _VARIABLE.sub(self._variable, text)

    def _variable(self, match: re.Match[str]) -> str:
        name = match.group(1).lower()
        if name.isdigit():
            index = int(name)
            return self.match_groups[index] if index < len(self.match_groups) else ""
        if "." in name:  # namespaces (RFC 5229 §3) are not supported: left as written
            return match.group(0)
        return self.variables.get(name, "")

    def strings(self, argument: Argument | None) -> list[str]:
        if not isinstance(argument, Strings):
            return []
        return [self.expand(value) for value in argument.values]

    def string(self, argument: Argument | None) -> str:
        values = self.strings(argument)
        return values[0] if values else ""

    # --- commands ----------------------------------------------------------------
    def run(self, commands: Sequence[Command]) -> None:
        previous_taken = True
        for command in commands:
            name = command.name
            if name == "require":
                continue
            if name in ("if", "elsif", "else"):
                if name == "if":
                    previous_taken = False
                if previous_taken:
                    continue
                if name == "else" or self.test(command.tests[0]):
                    previous_taken = True
                    self.run(command.block or [])
                continue
            getattr(self, "do_" + name)(command)

    def do_stop(self, command: Command) -> None:
        raise _Stop

    def _incompatible_with_reject(self) -> None:
        if self.outcome.rejection is not None:
            raise SieveRuntimeError(_WITH_REJECT)

    def _file(self, folder: str, command: Command) -> None:
        self._incompatible_with_reject()
        flags = self.strings(command.tags[":flags"]) if ":flags" in command.tags else self.flags
        folder = folder or INBOX
        self.outcome.filings[folder] = _flag_list(flags)

    def do_keep(self, command: Command) -> None:
        self._file(INBOX, command)
        self.implicit_keep = False

    def do_fileinto(self, command: Command) -> None:
        self._file(self.string(command.positional[0]), command)
        if ":copy" not in command.tags:  # RFC 3894 §3
            self.implicit_keep = False

    def do_discard(self, command: Command) -> None:
        self.implicit_keep = False

    def do_redirect(self, command: Command) -> None:
        address = self.string(command.positional[0]).strip()
        if "@" not in address:
            raise SieveRuntimeError(f"redirect to {address!r}: not an address")
        if address not in self.outcome.redirects:
            if len(self.outcome.redirects) >= _MAX_REDIRECTS:
                raise SieveRuntimeError("too many redirects")
            self.outcome.redirects.append(address)
        if ":copy" not in command.tags:
            self.implicit_keep = False

    def do_reject(self, command: Command) -> None:
        # RFC 5429 §2.1 and §2.2: reject cancels the implicit keep and cannot
        # go with keep, fileinto or vacation (an error: the message is kept).
        if self.outcome.filings or self.outcome.vacation:
            raise SieveRuntimeError(_WITH_REJECT)
        self.outcome.rejection = self.string(command.positional[0])
        self.implicit_keep = False

    do_ereject = do_reject

    def do_vacation(self, command: Command) -> None:
        self._incompatible_with_reject()
        days = command.tags.get(":days")
        self.outcome.vacation = VacationRequest(
            reason=self.string(command.positional[0]),
            days=days if isinstance(days, int) else None,
            subject=self.string(command.tags.get(":subject")),
            sender=self.string(command.tags.get(":from")),
            addresses=tuple(self.strings(command.tags.get(":addresses"))),
            handle=self.string(command.tags.get(":handle")),
            mime=":mime" in command.tags)

    def _flag_target(self, command: Command) -> tuple[str | None, list[str]]:
        name = self.string(command.positional[0]).lower() or None
        current = _split_flags(self.variables.get(name, "")) if name else self.flags
        return name, current

    def _set_flags(self, name: str | None, flags: Iterable[str]) -> None:
        flags = list(_flag_list(flags))
        if name:
            self.variables[name] = " ".join(flags)
        else:
            self.flags = flags

    def do_setflag(self, command: Command) -> None:
        name, _ = self._flag_target(command)
        self._set_flags(name, self.strings(command.positional[1]))

    def do_addflag(self, command: Command) -> None:
        name, current = self._flag_target(command)
        self._set_flags(name, [*current, *self.strings(command.positional[1])])

    def do_removeflag(self, command: Command) -> None:
        name, current = self._flag_target(command)
        gone = {f.lower() for f in _flag_list(self.strings(command.positional[1]))}
        self._set_flags(name, [f for f in current if f.lower() not in gone])

    def do_set(self, command: Command) -> None:
        # RFC 5229 §4.1: modifiers apply from the highest precedence down.
        name = self.string(command.positional[0]).lower()
        value = self.string(command.positional[1])
        tags = command.tags
        if ":lower" in tags:
            value = value.lower()
        if ":upper" in tags:
            value = value.upper()
        if ":lowerfirst" in tags:
            value = value[:1].lower() + value[1:]
        if ":upperfirst" in tags:
            value = value[:1].upper() + value[1:]
        if ":quotewildcard" in tags:
            value = re.sub(r"([*?\\])", r"\\\1", value)
        if ":length" in tags:
            value = str(len(value))
        self.variables[name] = value[:_MAX_VARIABLE]

    # --- tests -------------------------------------------------------------------
    def test(self, test: Test) -> bool:
        name = test.name
        if name == "true":
            return True
        if name == "false":
            return False
        if name == "not":
            return not self.test(test.tests[0])
        if name == "allof":
            return all(self.test(t) for t in test.tests)
        if name == "anyof":
            return any(self.test(t) for t in test.tests)
        if name == "exists":
            return all(self.message.get(h) is not None for h in self.strings(test.positional[0]))
        if name == "size":
            limit = test.positional[0]
            assert isinstance(limit, int)
            size = len(self.data)
            return size > limit if ":over" in test.tags else size < limit
        values = getattr(self, "values_" + name)(test)
        keys = self.strings(test.positional[-1])
        return self.match(test, values, keys)

    def values_header(self, test: Test) -> list[str]:
        return [_decoded(v) for h in self.strings(test.positional[0])
                for v in self.message.get_all(h, [])]

    def values_address(self, test: Test) -> list[str]:
        fields = [_decoded(v) for h in self.strings(test.positional[0])
                  for v in self.message.get_all(h, [])]
        return self._parts(test, [a for _, a in getaddresses(fields) if a])

    def values_envelope(self, test: Test) -> list[str]:
        addresses = []
        for part in self.strings(test.positional[0]):
            part = part.lower()
            if part == "from":
                addresses.append(self.envelope.sender)
            elif part == "to":
                addresses.append(self.envelope.recipient)
        return self._parts(test, addresses)

    def _parts(self, test: Test, addresses: list[str]) -> list[str]:
        """RFC 5228 §5.1 and RFC 5233 §4: the part of each address compared."""
        values: list[str] = []
        delimiter = self.envelope.subaddress_delimiter
        for address in addresses:
            local, at, domain = address.rpartition("@")
            if not at:
                local, domain = address, ""
            if ":localpart" in test.tags:
                values.append(local)
            elif ":domain" in test.tags:
                values.append(domain)
            elif ":user" in test.tags:
                values.append(local.split(delimiter, 1)[0] if delimiter else local)
            elif ":detail" in test.tags:
                # RFC 5233 §4: no detail at all never matches, an empty one does.
                if delimiter and delimiter in local:
                    values.append(local.split(delimiter, 1)[1])
            else:
                values.append(address)
        return values

    def values_date(self, test: Test) -> list[str]:
        """RFC 5260 §4: the date in the first field of that name, in the
        :zone asked for, the field's own (:originalzone), or the local one."""
        value = self.message.get(self.string(test.positional[0]))
        try:
            when = parsedate_to_datetime(str(value)) if value is not None else None
        except (TypeError, ValueError, IndexError):
            when = None
        if when is None:
            return []  # §4.1: no such field, or no date in it: the test fails
        if when.tzinfo is None:  # RFC 5322 §3.3 "-0000": no zone known
            when = when.replace(tzinfo=UTC)
        if ":originalzone" not in test.tags:
            when = self._in_zone(when, test)
        return _date_part(when, self.string(test.positional[1]))

    def values_currentdate(self, test: Test) -> list[str]:
        """RFC 5260 §5: the time the script runs."""
        return _date_part(self._in_zone(self.now, test), self.string(test.positional[0]))

    def _in_zone(self, when: datetime, test: Test) -> datetime:
        zone = _zone(self.string(test.tags.get(":zone"))) if ":zone" in test.tags else None
        return when.astimezone(zone or self.now.tzinfo)

    def values_body(self, test: Test) -> list[str]:
        return _body_texts(self.whole_message, self.data, test.tags,
                           self.strings(test.tags.get(":content")))

    @cached_property
    def whole_message(self) -> Message:
        """Parsed with its MIME parts, for the body test only."""
        return message_from_bytes(self.data, policy=compat32)

    def values_hasflag(self, test: Test) -> list[str]:
        names = self.strings(test.positional[0])
        if not names:
            return list(self.flags)
        return [f for n in names for f in _split_flags(self.variables.get(n.lower(), ""))]

    def values_string(self, test: Test) -> list[str]:
        # RFC 5229 §5: empty strings do not count for :count.
        values = self.strings(test.positional[0])
        return [v for v in values if v] if ":count" in test.tags else values

    def match(self, test: Test, values: list[str], keys: list[str]) -> bool:
        comparator = self.string(test.tags.get(":comparator")) or "i;ascii-casemap"
        if ":count" in test.tags:
            relation = self.string(test.tags[":count"]).lower()
            return any(_relate(relation, _compare("i;ascii-numeric", str(len(values)), key))
                       for key in keys)
        if ":value" in test.tags:
            relation = self.string(test.tags[":value"]).lower()
            return any(_relate(relation, _compare(comparator, value, key))
                       for value in values for key in keys)
        for value in values:
            for key in keys:
                if ":contains" in test.tags:
                    if _fold(comparator, key) in _fold(comparator, value):
                        return True
                elif ":matches" in test.tags:
                    groups = _glob(comparator, key, value)
                    if groups is not None:
                        self.match_groups = groups  # RFC 5229 §3.2
                        return True
                elif _compare(comparator, value, key) == 0:
                    return True
        return False


_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")


def _decoded(value: str) -> str:
    """A header field's value with its RFC 2047 words decoded (RFC 5228 §2.7.2)."""
    try:
        text = str(make_header(decode_header(value)))
    except (UnicodeError, LookupError, ValueError):
        text = value
    return " ".join(text.split()) if "\n" in text else text


def _split_flags(text: str) -> list[str]:
    return text.split()


def _flag_list(flags: Iterable[str]) -> tuple[str, ...]:
    """RFC 5232 §3: a flag list is space-separated names, each kept once."""
    seen: dict[str, str] = {}
    for item in flags:
        for flag in item.split():
            seen.setdefault(flag.lower(), flag)
    return tuple(seen.values())


def _fold(comparator: str, text: str) -> str:
    return text if comparator == "i;octet" else text.lower()


def _numeric(text: str) -> int | None:
    """RFC 4790 §9.1: the leading digits; none means positive infinity (None)."""
    match = re.match(r"[0-9]+", text)
    return int(match.group()) if match else None


def _compare(comparator: str, value: str, key: str) -> int:
    if comparator == "i;ascii-numeric":
        a, b = _numeric(value), _numeric(key)
        if a is None or b is None:
            return 0 if a is b else (1 if a is None else -1)
        return (a > b) - (a < b)
    a_text, b_text = _fold(comparator, value), _fold(comparator, key)
    return (a_text > b_text) - (a_text < b_text)


def _relate(relation: str, order: int) -> bool:
    return {"gt": order > 0, "ge": order >= 0, "lt": order < 0, "le": order <= 0,
            "eq": order == 0, "ne": order != 0}[relation]


def _glob_pieces(pattern: str) -> list[tuple[str, str]]:
    """RFC 5228 §2.7.1: ("*", ""), ("?", "") or ("=", a literal character);
    a backslash makes the next character literal."""
    pieces: list[tuple[str, str]] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            index += 1
            pieces.append(("=", pattern[index]))
        elif char in "*?":
            pieces.append((char, ""))
        else:
            pieces.append(("=", char))
        index += 1
    return pieces


def _glob_matches(pieces: list[tuple[str, str]], value: str) -> bool:
    """Whether ``value`` matches, in O(len(pieces) × len(value)) at worst
    (the two-pointer wildcard match): a regular expression with many ``*``
    backtracks for a time that grows with their number as its power."""
    p = v = 0
    star, mark = -1, 0
    while v < len(value):
        if p < len(pieces) and (pieces[p][0] == "?" or pieces[p] == ("=", value[v])):
            p += 1
            v += 1
        elif p < len(pieces) and pieces[p][0] == "*":
            star, mark = p, v
            p += 1
        elif star >= 0:
            p, mark = star + 1, mark + 1
            v = mark
        else:
            return False
    return all(kind == "*" for kind, _ in pieces[p:])


def _glob(comparator: str, pattern: str, value: str) -> list[str] | None:
    """RFC 5228 §2.7.1 :matches; the texts matched by each wildcard (RFC 5229 §3.2)."""
    pieces = _glob_pieces(_fold(comparator, pattern))
    if not _glob_matches(pieces, _fold(comparator, value)):
        return None
    regex = "".join("(.*?)" if kind == "*" else "(.)" if kind == "?" else re.escape(char)
                    for kind, char in pieces)
    flags = re.DOTALL | (0 if comparator == "i;octet" else re.IGNORECASE)
    match = re.fullmatch(regex, value, flags)
    if match is None:
        return None
    return [match.group(0), *match.groups()]


def _zone(text: str) -> timezone | None:
    """RFC 5260 §4.1.1: "+hhmm" or "-hhmm"; anything else: the local zone."""
    match = re.fullmatch(r"([+-])([0-9]{2})([0-9]{2})", text.strip())
    if match is None:
        return None
    offset = timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
    return timezone(-offset if match.group(1) == "-" else offset)


def _date_part(when: datetime, part: str) -> list[str]:
    """RFC 5260 §4.2: one date part as text (an unknown one is refused on upload)."""
    offset = when.utcoffset() or timedelta()
    minutes = int(offset.total_seconds() // 60)
    zone = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    part = part.lower()
    if part == "julian":  # days since 1858-11-17 (the Modified Julian Day)
        return [str((when.date() - date(1858, 11, 17)).days)]
    if part == "std11":
        return [when.strftime("%a, %d %b %Y %H:%M:%S ") + zone]
    if part == "iso8601":
        return [when.strftime("%Y-%m-%dT%H:%M:%S") + zone[:3] + ":" + zone[3:]]
    if part == "zone":
        return [zone]
    if part == "weekday":  # 0 is Sunday
        return [str(when.isoweekday() % 7)]
    formats = {"year": "%Y", "month": "%m", "day": "%d", "date": "%Y-%m-%d", "hour": "%H",
               "minute": "%M", "second": "%S", "time": "%H:%M:%S"}
    return [when.strftime(formats[part])] if part in formats else []


def _body_texts(message: Message, data: bytes, tags: dict[str, Argument | None],
                types: list[str]) -> list[str]:
    """RFC 5173 §5: the raw body, or the decoded text of the parts whose
    content type matches (:text: text/*)."""
    if ":raw" in tags:
        split = data.find(b"\r\n\r\n")
        start = split + 4 if split >= 0 else len(data)
        return [data[start:].decode("utf-8", errors="replace")]
    wanted = types if ":content" in tags else ["text"]
    texts = []
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        if not any(not t or content_type == t.lower() or content_type.split("/")[0]
                   == t.lower().rstrip("/") for t in wanted):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "us-ascii"
        try:
            texts.append(payload.decode(charset, errors="replace"))
        except LookupError:
            texts.append(payload.decode("utf-8", errors="replace"))
    return texts


def evaluate(commands: Sequence[Command], data: bytes, envelope: Envelope, *,
             now: datetime | None = None) -> Outcome:
    """What the script says to do with this message for this recipient;
    ``now`` (aware, in the server's zone) is what currentdate sees."""
    loaded = {name for command in commands if command.name == "require"
              for name in command.positional[0].values  # type: ignore[union-attr]
              }
    run = _Run(data, envelope, loaded, now or datetime.now(UTC).astimezone())
    try:
        run.run(commands)
    except _Stop:
        pass
    except SieveRuntimeError as error:
        # RFC 5228 §2.10.6: a runtime error files the message as the implicit keep.
        outcome = Outcome(error=str(error))
        outcome.filings[INBOX] = ()
        return outcome
    if run.implicit_keep:
        run.outcome.filings.setdefault(INBOX, _flag_list(run.flags))
    return run.outcome
