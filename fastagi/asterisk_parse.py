"""Asterisk's own parsers for what an AGI server writes, ported from its C source.

Used where callgate plays the Asterisk side: the `callgate agi` probe, the benchmark
and the tests' Asterisk simulator. They decode an `EXEC MSet "…"` line exactly as
Asterisk 22 stores it, which is how we know the encoder in fastagi.wire is right.
"""

from __future__ import annotations

from typing import Final

MAX_ARGS: Final = 128  # res_agi.c
MSET_MAX_ARGS: Final = 99  # pbx_builtin_setvar_multiple: AST_APP_ARG(pair)[99]



def agi_shell_split(line: str) -> list[str]:
    """res_agi.c parse_args(): words split on blanks, "..." groups, a backslash escapes any char."""
    words: list[list[str]] = []
    quoted = escaped = False
    whitespace = True
    for char in line:
        if char == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                words.append([])
                whitespace = False
            continue
        if char in " \t" and not quoted and not escaped:
            whitespace = True
            continue
        if char == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            if len(words) >= MAX_ARGS - 1:
                continue  # "Too many arguments, truncating": the char is dropped
            words.append([])
            whitespace = False
        words[-1].append(char)
        escaped = False
    return ["".join(word) for word in words]


def separate_args(buf: str, delim: str, arraylen: int) -> list[str]:
    """main/app.c __ast_app_separate_args(remove_chars=1).

    Splits on delim outside (), [] and "..."; removes double quotes; a backslash is removed
    and the char after it taken literally. The last of `arraylen` slots gets the unparsed rest.
    """
    args: list[str] = []
    paren = bracket = 0
    quote = ended_on_delim = False
    i, n = 0, len(buf)
    while i < n and len(args) < arraylen - 1:
        current: list[str] = []
        ended_on_delim = False
        while i < n:
            char = buf[i]
            i += 1
            if char == "(":
                paren += 1
            elif char == ")" and paren:
                paren -= 1
            elif char == "[":
                bracket += 1
            elif char == "]" and bracket:
                bracket -= 1
            elif char == '"' and delim != '"':
                quote = not quote
                continue
            elif char == "\\":
                if i < n:  # a trailing backslash reads past the NUL in C; drop it here
                    current.append(buf[i])
                    i += 1
                continue
            elif char == delim and not paren and not quote and not bracket:
                ended_on_delim = True
                break
            current.append(char)
        args.append("".join(current))
    if i < n:
        args.append(buf[i:])
    elif ended_on_delim:
        args.append("")
    return args


def mset_decode(arg: str) -> list[tuple[str, str]]:
    """MSet's data -> the (name, value) pairs it sets; entries without '=' are ignored."""
    if not arg:
        return []
    pairs: list[tuple[str, str]] = []
    for entry in separate_args(arg, ",", MSET_MAX_ARGS):
        parts = separate_args(entry, "=", 2)
        if len(parts) == 2:
            pairs.append((parts[0], parts[1]))
    return pairs


