"""Printing for the command line: text from recipes, cards, receipts and errors is shown
inert (`runtime.text.terminal_safe`), and data meant for a file stays exact in a pipe."""

from __future__ import annotations

import click

from runtime.text import terminal_safe


def say(text: str, **style: object) -> None:
    """Text for a person, styled as click.secho; every control character shown, not obeyed."""
    click.secho(terminal_safe(text), **style)  # type: ignore[arg-type]


def one_line(text: str) -> str:
    """A field shown within a line (a title in a listing): a newline in it cannot forge the
    lines after it."""
    return terminal_safe(text, one_line=True)


def emit_data(text: str, err: bool = False) -> None:
    """A file's text on stdout (YAML, JSON lines; a sandboxed command's output), or stderr
    with `err`: exact bytes into a pipe or a file (`> my.yaml`), inert characters on a
    terminal, where a person reads it."""
    stream = click.get_text_stream("stderr" if err else "stdout")
    click.echo(terminal_safe(text) if stream.isatty() else text, nl=False, err=err)
