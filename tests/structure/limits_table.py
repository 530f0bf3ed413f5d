#!/usr/bin/env python3
"""limits_table.py: prints the Markdown table of docs/DESIGN.md, "Limits", from `pycached --limits`
(PYCACHED names the binary; default build/server/pycached). Run it after adding a limit and paste
the output; the e2e suite checks that the two agree."""
import os
import subprocess
import sys

binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PYCACHED", "build/server/pycached")
lines = subprocess.run([binary, "--limits"], capture_output=True, text=True,
                       check=True).stdout.splitlines()[1:]
print("| limit | value | option | what |")
print("| --- | ---: | --- | --- |")
for line in lines:
    name, value, option, what = line.split(None, 3)
    print("| `%s` | %s | %s | %s |" % (name, value, "`%s`" % option if option != "-" else "-", what))
