"""The Sieve parser and checks (RFC 5228 §8 and the extensions): byte-free
text in, a tree or an error with its line out; fuzzed with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.sieve.commands import compile_script
from apps.sieve.grammar import SieveSyntaxError, Strings, Tag, parse


def test_commands_tests_and_arguments():
    (require, rule) = parse('require ["fileinto", "copy"];\r\n'
                            'if anyof (header :contains "Subject" "x", size :over 10K) {\n'
                            '  fileinto :copy "A";  /* note */ stop;\n}')
    assert require.positional == [] and require.arguments == [
        Strings(("fileinto", "copy"), is_list=True)]
    (test,) = rule.tests
    assert test.name == "anyof" and [t.name for t in test.tests] == ["header", "size"]
    assert test.tests[1].arguments == [Tag(":over"), 10 * 1024]
    assert [c.name for c in rule.block or []] == ["fileinto", "stop"]
    assert rule.block is not None and rule.block[0].line == 3


def test_strings_escapes_and_multiline_text():
    (command,) = parse('vacation "a \\"quoted\\" \\\\ \\x";')
    assert command.arguments == [Strings(('a "quoted" \\ x',))]
    (command,) = parse("vacation text: # comment\n..leading dot\nline\n.\n;")
    assert command.arguments == [Strings((".leading dot\r\nline\r\n",))]


@pytest.mark.parametrize(("script", "line", "message"), [
    ("keep", 1, "expected ';' or a block, found the end of the script"),
    ('require "fileinto";\n\nfileinto;', 3, "fileinto takes 1 argument(s), not 0"),
    ('fileinto "x";', 1, 'command fileinto needs require "fileinto"'),
    ('require "imap4flags";\nkeep :flags;', 2, ":flags needs a strings after it"),
    ("if true {\n keep;\n", 2, "expected '}', found the end of the script"),
    ('keep;\nrequire "copy";', 2, "require must come before other commands"),
    ('require "enotify";', 1, "unsupported extension enotify"),
    ("else { keep; }", 1, "else without if"),
    ('if header :is :contains "a" "b" {}', 1, "more than one match type"),
    ('if header :count "ge" "a" "1" {}', 1, ':count needs require "relational"'),
    ('if address :detail "to" "x" {}', 1, ':detail needs require "subaddress"'),
    ('/* open\n\n', 1, "comment /* not closed"),
    ('"no command";', 1, "expected a command, found 'no command'"),
    ("frobnicate;", 1, "unknown command frobnicate"),
    ("if frob {}", 1, "unknown test frob"),
    ("keep; 99999999999;", 1, "number 99999999999 is too large"),
    ("if size 10 { keep; }", 1, "size takes :over or :under"),
    ('vacation text:\nnever ends\n', 1, "text: block not ended by a line with a lone dot"),
])
def test_errors_name_their_line(script, line, message):
    with pytest.raises(SieveSyntaxError) as caught:
        compile_script(script)
    assert (caught.value.line, caught.value.message) == (line, message)
    assert str(caught.value) == f"line {line}: {message}"


def test_every_supported_extension_compiles():
    compile_script("""require ["fileinto", "envelope", "imap4flags", "copy", "body",
        "variables", "relational", "subaddress", "reject", "ereject", "vacation",
        "comparator-i;ascii-numeric", "comparator-i;octet"];
    if allof (envelope :user "from" "bob", address :domain :is "to" "example.org",
              body :content "text/plain" :contains "x",
              header :value "ge" :comparator "i;ascii-numeric" "x-n" "3",
              hasflag "\\\\Seen", string :matches "${1}" "*", not exists "x-y") {
        set :upper :length "n" "abc"; setflag "f" "a b"; addflag "c"; removeflag "a";
        fileinto :copy :flags "\\\\Seen" "F"; redirect :copy "a@b.example";
        vacation :days 3 :subject "s" :from "a@b.example" :addresses ["c@d.example"]
            :handle "h" :mime "r"; reject "no"; ereject "no"; discard; keep; stop;
    } elsif true {} else {}""")


@given(st.text(max_size=200))
def test_any_text_parses_or_fails_with_a_line(text):
    try:
        compile_script(text)
    except SieveSyntaxError as error:
        assert 1 <= error.line <= text.count("\n") + text.count("\r") + 1


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=50))
def test_quoted_strings_round_trip(value):
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    (command,) = parse(f"redirect {quoted};")
    assert command.arguments == [Strings((value,))]


_SAFE_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
_GOOD_LINES = st.one_of(
    st.just("keep;"), st.just("stop;"),
    _SAFE_TEXT.map(lambda s: 'redirect "{}";'.format(s.replace("\\", "\\\\").replace('"', '\\"'))),
    st.integers(0, 1 << 20).map(lambda n: f"if size :over {n} {{ discard; }}"),
    st.just("# a comment"), st.just("/* a comment */"), st.just(""),
)
_BAD_LINES = st.sampled_from(["keep", "frob;", "if true keep;", "}", "redirect;",
                              'keep "x";', "size :over 1;"])


@given(st.lists(_GOOD_LINES, max_size=15), _BAD_LINES, st.data())
def test_the_error_names_the_line_of_the_mistake(good, bad, data):
    at = data.draw(st.integers(0, len(good)))
    lines = [*good[:at], bad, *good[at:]]
    compile_script("\n".join(good))
    with pytest.raises(SieveSyntaxError) as caught:
        compile_script("\n".join(lines))
    # "keep" without ";" is found on the next command's line (or the last).
    assert caught.value.line >= at + 1
    if bad != "keep":
        assert caught.value.line == at + 1
