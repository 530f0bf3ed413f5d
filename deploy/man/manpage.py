#!/usr/bin/env python3
"""manpage.py: writes a man page from a hand-written troff template and the program's own
--help, so that the options a page lists are the ones the program has (pycached's come from
server/config.c's one option table). The template's line `@HELP@` becomes one section per
section of --help ("Options:", "Commands:", ...), each entry a .TP paragraph; `@VERSION@`
becomes the version.

Usage: manpage.py PROGRAM TEMPLATE VERSION OUT"""
import re
import subprocess
import sys

ENTRY = re.compile(r"^( {2,})(\S.*?)(?: {2,}(\S.*))?$")  # "  --name ARG    what it does"


def roff(text):
    """Plain text as troff: backslashes, a leading dot or quote, hyphens of options."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"(?<![\w])-", r"\\-", text)
    return "\\&" + text if text[:1] in (".", "'") else text


def sections(help_text):
    """[(title, [[term, description]], note)] from --help: a title is a line ending in ':' at
    column 0; an entry a line indented by two, or an option ("      --all   what"); other
    lines continue the last entry."""
    out = []
    for line in help_text.splitlines():
        if re.match(r"^[A-Z].*:$", line):
            title, _, note = line[:-1].partition(" (")
            out.append((title, [], note.rstrip(")")))
        elif out and ENTRY.match(line) and (
                len(ENTRY.match(line).group(1)) == 2 or
                (ENTRY.match(line).group(2).startswith("-") and ENTRY.match(line).group(3))):
            _, term, desc = ENTRY.match(line).groups()
            out[-1][1].append([term, desc or ""])
        elif out and out[-1][1] and line.strip():
            entry = out[-1][1][-1]
            entry[1] = (entry[1] + " " + line.strip()).strip()
    return [s for s in out if s[1]]


def render(help_text):
    lines = []
    for title, entries, note in sections(help_text):
        lines.append(".SH " + title.upper())
        if note:
            lines += [roff(note[0].upper() + note[1:]).rstrip(".") + "."]
        for term, desc in entries:
            lines += [".TP", "\\fB" + roff(term) + "\\fR", roff(desc)]
    return "\n".join(lines)


def main(program, template, version, out):
    help_text = subprocess.run([program, "--help"], capture_output=True, text=True,
                               check=True, timeout=60).stdout
    with open(template, encoding="utf-8") as f:
        page = f.read()
    page = page.replace("@VERSION@", version).replace("@HELP@", render(help_text))
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)


if __name__ == "__main__":
    main(*sys.argv[1:])
