"""Help text is literal: Rich never reads ``[word]`` in a help string as markup, for any command."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
import typer
from saip.cli import app, main
from typer.testing import CliRunner

BRACKETS = re.compile(r"\[[^\[\]\n]*\]")


def _flat(text: str) -> str:
    """Rendered help without the panel borders and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _commands(
    cmd: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            if not sub.hidden:
                yield from _commands(sub, (*path, name))


def _help_strings(cmd: click.Command) -> list[str]:
    texts = [(cmd.help or "").partition("\f")[0]]
    for param in cmd.params:  # options and (Typer) arguments both carry .help
        if not getattr(param, "hidden", False):
            texts.append(getattr(param, "help", None) or "")
    return [t for t in texts if t]


def test_markup_looking_help_is_shown_verbatim() -> None:
    """The hostile case first: tags Rich knows, unknown words and a closing tag, on a fresh app."""
    probe = typer.Typer(add_completion=False)
    hostile = "Set [encryption] key; [bold]not bold[/bold]; [red]x[/]; [link=http://e]y[/link]."

    @probe.command(help=hostile)
    def run(opt: str = typer.Option("", help=f"Option: {hostile}")) -> None:
        """Unused."""

    @probe.command()
    def other() -> None:
        """Second command, so that ``run`` is a subcommand."""

    out = CliRunner().invoke(probe, ["run", "--help"], env={"COLUMNS": "300"}).output
    assert _flat(out).count(_flat(hostile)) == 2, out


def test_every_bracket_in_every_help_text_is_rendered(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    root = typer.main.get_command(app)
    checked = 0
    for path, cmd in _commands(root):
        expected = [b for text in _help_strings(cmd) for b in BRACKETS.findall(text)]
        if not expected:
            continue
        assert main([*path, "--help"]) == 0
        rendered = _flat(capsys.readouterr().out)
        for bracket in expected:
            assert _flat(bracket) in rendered, (path, bracket)
            checked += 1
    assert checked >= 3  # the walk found real bracketed help texts (not a vacuous pass)
