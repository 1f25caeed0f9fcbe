"""What each Sieve command and test accepts, and the check that a parsed
script keeps to it (RFC 5228 §§3-5 and the extensions we support). Pure:
``validate`` raises SieveSyntaxError with the line at fault."""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.sieve.grammar import Argument, Command, SieveSyntaxError, Strings, Tag, Test, parse

# The capabilities announced by ManageSieve's SIEVE line (RFC 5804 §1.7) and
# accepted by "require". RFC 5228 §2.10.5: "fileinto" and "envelope" are
# extensions too; "comparator-*" names the comparators beyond the defaults.
EXTENSIONS = (
    "fileinto", "envelope", "imap4flags", "copy", "body", "variables", "relational",
    "subaddress", "reject", "ereject", "vacation", "date", "comparator-i;ascii-numeric",
)

# RFC 5228 §2.7.3: always there, so a script may require them by name.
BUILT_IN = ("comparator-i;octet", "comparator-i;ascii-casemap")

MATCH_TYPES = {":is": None, ":contains": None, ":matches": None,
               ":count": "relational", ":value": "relational"}
ADDRESS_PARTS = {":all": None, ":localpart": None, ":domain": None,
                 ":user": "subaddress", ":detail": "subaddress"}
COMPARATORS = {"i;octet": None, "i;ascii-casemap": None,
               "i;ascii-numeric": "comparator-i;ascii-numeric"}
# RFC 5231 §4: the relational operators.
RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")


@dataclass(frozen=True)
class Spec:
    """``tags``: name -> the kind of value it takes (None: a flag);
    ``positional``: the kinds of the positional arguments in order
    ("strings", "string" or "number"), optional ones counted from the front
    when fewer are given; ``tests``: how many tests follow (0, 1, or -1: a list)."""

    extension: str | None = None
    tags: dict[str, str | None] = field(default_factory=dict)
    tag_extensions: dict[str, str] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    optional: int = 0
    tests: int = 0
    block: bool = False
    matching: bool = False  # takes :comparator and a match type
    address: bool = False  # takes an address part


_FLAGS_TAG = {":flags": "strings"}
_IMAP4FLAGS = {":flags": "imap4flags"}

COMMANDS: dict[str, Spec] = {
    "require": Spec(positional=("strings",)),
    "if": Spec(tests=1, block=True),
    "elsif": Spec(tests=1, block=True),
    "else": Spec(block=True),
    "stop": Spec(),
    "keep": Spec(tags=_FLAGS_TAG, tag_extensions=_IMAP4FLAGS),
    "discard": Spec(),
    "fileinto": Spec("fileinto", tags={":copy": None, **_FLAGS_TAG},
                     tag_extensions={":copy": "copy", **_IMAP4FLAGS}, positional=("string",)),
    "redirect": Spec(tags={":copy": None}, tag_extensions={":copy": "copy"},
                     positional=("string",)),
    "reject": Spec("reject", positional=("string",)),
    "ereject": Spec("ereject", positional=("string",)),
    # RFC 5230 §4.
    "vacation": Spec("vacation", tags={":days": "number", ":subject": "string",
                                       ":from": "string", ":addresses": "strings",
                                       ":mime": None, ":handle": "string"},
                     positional=("string",)),
    # RFC 5232 §3: an optional variable name before the flags.
    "setflag": Spec("imap4flags", positional=("string", "strings"), optional=1),
    "addflag": Spec("imap4flags", positional=("string", "strings"), optional=1),
    "removeflag": Spec("imap4flags", positional=("string", "strings"), optional=1),
    # RFC 5229 §4: modifiers.
    "set": Spec("variables", tags=dict.fromkeys(
        (":lower", ":upper", ":lowerfirst", ":upperfirst", ":quotewildcard", ":length")),
        positional=("string", "string")),
}

TESTS: dict[str, Spec] = {
    "address": Spec(positional=("strings", "strings"), matching=True, address=True),
    "envelope": Spec("envelope", positional=("strings", "strings"), matching=True,
                     address=True),
    "header": Spec(positional=("strings", "strings"), matching=True),
    "exists": Spec(positional=("strings",)),
    "size": Spec(tags={":over": None, ":under": None}, positional=("number",)),
    "allof": Spec(tests=-1),
    "anyof": Spec(tests=-1),
    "not": Spec(tests=1),
    "true": Spec(),
    "false": Spec(),
    # RFC 5173 §5: :raw, :text or :content with its types.
    "body": Spec("body", tags={":raw": None, ":text": None, ":content": "strings"},
                 positional=("strings",), matching=True),
    "hasflag": Spec("imap4flags", positional=("strings", "strings"), optional=1,
                    matching=True),
    "string": Spec("variables", positional=("strings", "strings"), matching=True),
    # RFC 5260 §4.
    "date": Spec("date", tags={":zone": "string", ":originalzone": None},
                 positional=("string", "string", "strings"), matching=True),
    "currentdate": Spec("date", tags={":zone": "string"}, positional=("string", "strings"),
                        matching=True),
}

# RFC 5260 §4.2: the parts of a date a test compares.
DATE_PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time",
              "iso8601", "std11", "zone", "weekday")


def _kind_of(argument: Argument) -> str:
    if isinstance(argument, Tag):
        return "tag"
    if isinstance(argument, int):
        return "number"
    return "strings" if argument.is_list or len(argument.values) != 1 else "string"


def _fits(kind: str, argument: Argument) -> bool:
    actual = _kind_of(argument)
    return actual == kind or (kind == "strings" and actual == "string")


def _check(node: Command | Test, spec: Spec, loaded: set[str], what: str) -> None:
    line = node.line
    if spec.extension and spec.extension not in loaded:
        raise SieveSyntaxError(line, f'{what} {node.name} needs require "{spec.extension}"')
    tags: dict[str, Argument | None] = {}
    positional: list[Argument] = []
    arguments = list(node.arguments)
    while arguments:
        argument = arguments.pop(0)
        if not isinstance(argument, Tag):
            positional.append(argument)
            continue
        name = argument.name
        needs: str | None
        if name in spec.tags:
            kind = spec.tags[name]
            needs = spec.tag_extensions.get(name)
        elif spec.matching and name in MATCH_TYPES:
            kind, needs = ("string" if MATCH_TYPES[name] else None), MATCH_TYPES[name]
            if any(t in tags for t in MATCH_TYPES):
                raise SieveSyntaxError(line, "more than one match type")
        elif spec.matching and name == ":comparator":
            kind, needs = "string", None
        elif spec.address and name in ADDRESS_PARTS:
            kind, needs = None, ADDRESS_PARTS[name]
            if any(t in tags for t in ADDRESS_PARTS):
                raise SieveSyntaxError(line, "more than one address part")
        else:
            raise SieveSyntaxError(line, f"{node.name} does not take {name}")
        if needs and needs not in loaded:
            raise SieveSyntaxError(line, f'{name} needs require "{needs}"')
        if name in tags:
            raise SieveSyntaxError(line, f"{name} given twice")
        value: Argument | None = None
        if kind is not None:
            if not arguments or not _fits(kind, arguments[0]):
                raise SieveSyntaxError(line, f"{name} needs a {kind} after it")
            value = arguments.pop(0)
        tags[name] = value
    _check_values(node, tags, loaded)
    wanted = spec.positional[spec.optional:] if len(positional) < len(spec.positional) \
        else spec.positional
    if len(positional) != len(wanted):
        raise SieveSyntaxError(line, f"{node.name} takes {len(spec.positional)} "
                                     f"argument(s), not {len(positional)}")
    for kind, argument in zip(wanted, positional, strict=True):
        if not _fits(kind, argument):
            raise SieveSyntaxError(line, f"{node.name} needs a {kind} here")
    if spec.tests == 0 and node.tests:
        raise SieveSyntaxError(line, f"{node.name} takes no test")
    if spec.tests == 1 and len(node.tests) != 1:
        raise SieveSyntaxError(line, f"{node.name} takes one test")
    if spec.tests == -1 and not node.tests:
        raise SieveSyntaxError(line, f"{node.name} takes a list of tests")
    node.tags, node.positional = tags, list(positional)
    if len(positional) < len(spec.positional):  # the optional ones left out
        node.positional[:0] = [Strings(())] * (len(spec.positional) - len(positional))
    for test in node.tests:
        _check_test(test, loaded)


def _check_values(node: Command | Test, tags: dict[str, Argument | None],
                  loaded: set[str]) -> None:
    comparator = tags.get(":comparator")
    if isinstance(comparator, Strings):
        name = comparator.values[0]
        if name not in COMPARATORS:
            raise SieveSyntaxError(node.line, f"unknown comparator {name}")
        if (needs := COMPARATORS[name]) and needs not in loaded:
            raise SieveSyntaxError(node.line, f'comparator {name} needs require "{needs}"')
    for relational in (":count", ":value"):
        relation = tags.get(relational)
        if isinstance(relation, Strings) and relation.values[0].lower() not in RELATIONS:
            raise SieveSyntaxError(node.line, f"unknown relation {relation.values[0]}")


def _check_test(test: Test, loaded: set[str]) -> None:
    spec = TESTS.get(test.name)
    if spec is None:
        raise SieveSyntaxError(test.line, f"unknown test {test.name}")
    _check(test, spec, loaded, "test")
    if test.name == "size" and len(test.tags) != 1:  # RFC 5228 §5.9
        raise SieveSyntaxError(test.line, "size takes :over or :under")
    if test.name in ("date", "currentdate"):
        part = test.positional[-2]
        if isinstance(part, Strings) and part.values[0].lower() not in DATE_PARTS:
            raise SieveSyntaxError(test.line, f"unknown date part {part.values[0]}")
        if ":zone" in test.tags and ":originalzone" in test.tags:
            raise SieveSyntaxError(test.line, "take :zone or :originalzone, not both")


def validate(commands: list[Command], loaded: set[str] | None = None,
             *, top: bool = True) -> None:
    """Check every command against its spec; ``require`` only at the start
    (RFC 5228 §3.2), elsif/else only after if/elsif."""
    loaded = set() if loaded is None else loaded
    previous = ""
    requires_allowed = top
    for command in commands:
        spec = COMMANDS.get(command.name)
        if spec is None:
            raise SieveSyntaxError(command.line, f"unknown command {command.name}")
        if command.name == "require":
            if not requires_allowed:
                raise SieveSyntaxError(command.line, "require must come before other commands")
        else:
            requires_allowed = False
        if command.name in ("elsif", "else") and previous not in ("if", "elsif"):
            raise SieveSyntaxError(command.line, f"{command.name} without if")
        _check(command, spec, loaded, "command")
        if spec.block and command.block is None:
            raise SieveSyntaxError(command.line, f"{command.name} needs a block")
        if not spec.block and command.block is not None:
            raise SieveSyntaxError(command.line, f"{command.name} takes no block")
        if command.name == "require":
            names = command.positional[0]
            assert isinstance(names, Strings)
            for name in names.values:
                if name not in EXTENSIONS and name not in BUILT_IN:
                    raise SieveSyntaxError(command.line, f"unsupported extension {name}")
                loaded.add(name)
        if command.block is not None:
            validate(command.block, loaded, top=False)
        previous = command.name


def compile_script(text: str) -> list[Command]:
    """Parse and validate: the form scripts are stored and run in."""
    commands = parse(text)
    validate(commands)
    return commands
