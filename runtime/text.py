"""Text from strangers, made safe to print on a terminal. Pure.

Recipe titles, card text, chat messages and model output all reach a terminal somewhere
(`potluck recipe list`, `potluck chat`), and a terminal obeys what it prints: ESC sequences
clear the screen, retitle the window or write the clipboard (OSC 52), C1 bytes do the same
without an ESC, a carriage return or backspace overwrites what was shown, and bidi
overrides make text read differently from what it is. So every such character is
replaced by a visible stand-in, one character at a time: nothing is hidden, an attack is
seen for what it is, and text streamed in pieces comes out the same as text printed whole
(`terminal_safe(a + b) == terminal_safe(a) + terminal_safe(b)`), so a stream needs no
state to stay safe.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"

_MULTI_LINE: dict[int, str | None] = {
    # C0 controls as their Unicode control pictures (ESC shows as ␛), except tab and newline
    **{code: chr(0x2400 + code) for code in range(0x20) if chr(code) not in "\t\n\r"},
    ord("\r"): None,  # CR LF reads as LF; a lone CR (overwrite the line) is dropped
    0x7F: "\u2421",  # DEL: ␡
    **{code: REPLACEMENT for code in range(0x80, 0xA0)},  # C1: CSI, OSC, NEL… without ESC
    **{code: REPLACEMENT for code in range(0x202A, 0x202F)},  # bidi embeddings and overrides
    **{code: REPLACEMENT for code in range(0x2066, 0x206A)},  # bidi isolates
    **{code: REPLACEMENT for code in range(0xD800, 0xE000)},  # lone surrogates: not text
}
_ONE_LINE = {**_MULTI_LINE, ord("\n"): "\u2424", ord("\t"): " "}  # newline shows as ␤


def terminal_safe(text: str, *, one_line: bool = False) -> str:
    """`text` with every character a terminal would act on replaced by a visible one.
    `one_line` also shows newlines as ␤, for a field printed within a line (a title in a
    listing), where a newline could forge the lines after it."""
    return text.translate(_ONE_LINE if one_line else _MULTI_LINE)
