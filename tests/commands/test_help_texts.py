"""Every subcommand's --help: no RST markup, no citation of a file users do not get."""

from __future__ import annotations

import pytest

from spectrumkd.cli import COMMANDS, build_parser


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_is_plain_and_self_contained(name, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([name, "--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "DESIGN" not in text and ":func:" not in text, text


def test_the_options_of_the_issue_say_what_they_take(capsys):
    shown = {}
    for name in ("score", "eval", "student"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        shown[name] = " ".join(capsys.readouterr().out.split())
    assert "spectrumkd:dolly/train.jsonl" in shown["score"]
    assert "seconds per program (default 10)" in shown["eval"]
    assert "--method angular|bi|every" in shown["student"]
    assert "--heal-divergence fkl|rkl|jsd|tvd|skl|srkl" in shown["student"]
