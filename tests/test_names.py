"""One name grammar: pvchat.model.prompt owns the <Name> rule; every other module uses it."""

from pathlib import Path

import pytest

from pvchat.errors import InputError
from pvchat.model.prompt import NAME_PATTERN, is_subject_token, names_in, validate_name
from pvchat.qa.facts import subject_token
from pvchat.qa.rewrite import check_token

SRC = Path(__file__).resolve().parents[1] / "src" / "pvchat"
NAMES = ["Anna", "a", "Ben-2", "x_y", "A" * 32, "A" * 33, "2pac", "_a", "", "An na", "Anna\n", "Zoë"]


def test_names_in_mentions_in_order_without_repeats_or_reserved_tokens():
    assert names_in("Where is <A> relative to <B>? <A>") == ["A", "B"]
    assert names_in("<video> Is <s> here? </s> [INST] <Anna>") == ["Anna"]
    assert names_in("Is <" + "A" * 40 + "> here?") == ["A" * 40]  # found, so it can be refused
    assert names_in("a < b > c, <2x>, <>") == [] and names_in("") == [] and names_in(None) == []


@pytest.mark.parametrize("name", NAMES)
def test_every_check_of_a_name_is_the_same_rule(name):
    ok = bool(NAME_PATTERN.match(name))
    assert is_subject_token(f"<{name}>") == ok
    for check in (subject_token, validate_name, lambda n: check_token(f"<{n}>")):
        if ok:
            check(name)
        else:
            with pytest.raises(InputError):
                check(name)


def test_the_name_pattern_is_written_once():
    """Only model/prompt.py writes the name's character classes."""
    allowed = {"model/prompt.py"}
    writers = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                     if "[A-Za-z0-9_" in p.read_text(encoding="utf-8"))
    assert set(writers) <= allowed, writers
