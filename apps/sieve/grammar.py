"""The Sieve language (RFC 5228 §8) read into a tree: a pure function over
text, no I/O. ``parse`` checks the grammar only; ``apps.sieve.commands``
checks what each command accepts and what ``require`` loaded.

Our own parser rather than sievelib's: sievelib 1.6 lacks subaddress's
``:user``/``:detail``, ``ereject`` and the variables test ``string``, and
gives no tree an evaluator can walk without re-parsing its quoted arguments."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class SieveSyntaxError(Exception):
    """A script the grammar (or a command's rules) refuses, with its line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Tag:
    name: str  # lower case, with its colon: ":copy"


@dataclass(frozen=True)
class Strings:
    values: tuple[str, ...]
    is_list: bool = False  # written as [...] (a single string may stand for a list)


Argument = Tag | int | Strings


@dataclass
class Test:
    name: str
    arguments: list[Argument]
    tests: list[Test]
    line: int
    # Filled by apps.sieve.commands.validate: tagged arguments and positional ones.
    tags: dict[str, Argument | None] = field(default_factory=dict)
    positional: list[Argument] = field(default_factory=list)


@dataclass
class Command:
    name: str
    arguments: list[Argument]
    tests: list[Test]
    line: int
    block: list[Command] | None = None
    # Filled by apps.sieve.commands.validate: tagged arguments and positional ones.
    tags: dict[str, Argument | None] = field(default_factory=dict)
    positional: list[Argument] = field(default_factory=list)


# RFC 5228 §8.1. Order matters: multi-line before identifier ("text:").
_TOKEN = re.compile(r"""
    (?P<ws>[ \t]+|\r?\n)
  | (?P<hash>\#[^\n]*)
  | (?P<bracket>/\*)
  | (?P<multiline>text:[ \t]*(?:\#[^\n]*)?\r?\n)
  | (?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<identifier>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9]+[KkMmGg]?)
  | (?P<quote>")
  | (?P<special>[\[\](),;{}])
""", re.VERBOSE)

_QUANTIFIER = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True)
class _Token:
    kind: str  # tag, identifier, number, string, or the special character itself
    value: str | int
    line: int


def tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position, line, end = 0, 1, len(text)
    while position < end:
        match = _TOKEN.match(text, position)
        if match is None:
            raise SieveSyntaxError(line, f"unexpected character {text[position]!r}")
        kind = match.lastgroup
        value = match.group()
        start_line = line
        if kind == "bracket":
            close = text.find("*/", match.end())
            if close < 0:
                raise SieveSyntaxError(line, "comment /* not closed")
            line += text.count("\n", position, close)
            position = close + 2
            continue
        if kind == "quote":
            value, position, line = _quoted(text, match.end(), line)
            tokens.append(_Token("string", value, start_line))
            continue
        if kind == "multiline":
            value, position, line = _multiline(text, match.end(), line + 1)
            tokens.append(_Token("string", value, start_line))
            continue
        line += value.count("\n")
        position = match.end()
        if kind in ("ws", "hash"):
            continue
        if kind == "number":
            unit = _QUANTIFIER.get(value[-1].lower(), 1)
            number = int(value.rstrip("KkMmGg")) * unit
            if number >= 1 << 32:  # RFC 5228 §2.4.1: numbers are 32-bit unsigned
                raise SieveSyntaxError(line, f"number {value} is too large")
            tokens.append(_Token("number", number, line))
        elif kind in ("tag", "identifier"):
            tokens.append(_Token(kind, value.lower(), line))
        else:
            tokens.append(_Token(value, value, line))
    return tokens


def _quoted(text: str, position: int, line: int) -> tuple[str, int, int]:
    """RFC 5228 §2.4.2: backslash escapes the next character, any other
    backslash is dropped; the string may span lines."""
    out: list[str] = []
    start_line = line
    while position < len(text):
        char = text[position]
        if char == '"':
            return "".join(out), position + 1, line
        if char == "\\" and position + 1 < len(text):
            position += 1
            char = text[position]
        if char == "\n":
            line += 1
        out.append(char)
        position += 1
    raise SieveSyntaxError(start_line, "string not closed by a double quote")


def _multiline(text: str, position: int, line: int) -> tuple[str, int, int]:
    """RFC 5228 §2.4.2: lines up to one holding a lone dot; a leading dot
    of any other line is doubled."""
    out: list[str] = []
    start_line = line - 1
    while position < len(text):
        newline = text.find("\n", position)
        raw = text[position:] if newline < 0 else text[position:newline + 1]
        position += len(raw)
        content = raw.rstrip("\r\n")
        if content == ".":
            return "".join(out), position, line + 1
        out.append((content[1:] if content.startswith("..") else content) + "\r\n")
        line += 1
    raise SieveSyntaxError(start_line, "text: block not ended by a line with a lone dot")


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def line(self) -> int:
        token = self.peek() or (self.tokens[-1] if self.tokens else None)
        return token.line if token else 1

    def take(self, kind: str, what: str) -> _Token:
        token = self.peek()
        if token is None or token.kind != kind:
            found = "the end of the script" if token is None else repr(token.value)
            raise SieveSyntaxError(self.line(), f"expected {what}, found {found}")
        self.index += 1
        return token

    def commands(self, *, in_block: bool) -> list[Command]:
        commands = []
        while (token := self.peek()) is not None and token.kind != "}":
            commands.append(self.command())
        if in_block:
            self.take("}", "'}'")
        elif self.peek() is not None:
            raise SieveSyntaxError(self.line(), "unexpected '}'")
        return commands

    def command(self) -> Command:
        name = self.take("identifier", "a command")
        arguments, tests = self.arguments()
        token = self.peek()
        if token is not None and token.kind == "{":
            self.index += 1
            block = self.commands(in_block=True)
            return Command(str(name.value), arguments, tests, name.line, block)
        self.take(";", "';' or a block")
        return Command(str(name.value), arguments, tests, name.line)

    def arguments(self) -> tuple[list[Argument], list[Test]]:
        arguments: list[Argument] = []
        while (token := self.peek()) is not None:
            if token.kind == "tag":
                arguments.append(Tag(str(token.value)))
            elif token.kind == "number":
                arguments.append(int(token.value))
            elif token.kind == "string":
                arguments.append(Strings((str(token.value),)))
            elif token.kind == "[":
                arguments.append(self.string_list())
                continue
            else:
                break
            self.index += 1
        token = self.peek()
        if token is not None and token.kind == "identifier":
            return arguments, [self.test()]
        if token is not None and token.kind == "(":
            return arguments, self.test_list()
        return arguments, []

    def string_list(self) -> Strings:
        self.take("[", "'['")
        values = [str(self.take("string", "a string").value)]
        while (token := self.peek()) is not None and token.kind == ",":
            self.index += 1
            values.append(str(self.take("string", "a string").value))
        self.take("]", "',' or ']'")
        return Strings(tuple(values), is_list=True)

    def test(self) -> Test:
        name = self.take("identifier", "a test")
        arguments, tests = self.arguments()
        return Test(str(name.value), arguments, tests, name.line)

    def test_list(self) -> list[Test]:
        self.take("(", "'('")
        tests = [self.test()]
        while (token := self.peek()) is not None and token.kind == ",":
            self.index += 1
            tests.append(self.test())
        self.take(")", "',' or ')'")
        return tests


def parse(text: str) -> list[Command]:
    """The script's commands; raises SieveSyntaxError with the line at fault."""
    return _Parser(tokenize(text)).commands(in_block=False)
