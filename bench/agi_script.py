#!/usr/bin/env python3
"""The classic process-per-call AGI script: Asterisk's AGI() starts it for every decision.

    exten => _X.,n,AGI(/usr/local/bin/agi_script.py,callPrepare,login=${EXTEN_LOGIN},destination=${EXTEN},prior=1)

It reads the env block with pyst2 (`asterisk.agi.AGI`), asks callgate's HTTP shim with
urllib (the way such scripts usually "curl the billing"), and sets CALLGATE_* channel
variables with `SET VARIABLE`, one command at a time, then exits. bench/load.py plays
Asterisk for it (script mode) to compare this approach with FastAGI.

Arguments: agi_arg_1 is the method (callPrepare / callFinish), agi_arg_2.. are `key=value`
pairs; agi_uniqueid is sent as `call_id` so that the two decisions of a call pair up.
Where callgate is, like any script's configuration, comes from the environment:
CALLGATE_SCRIPT_API = http://host:port/billing/api/2.2/<key>.

Deliberately only the standard library and pyst2, imported at the top: what a real script
pays at every start is part of what is measured.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from asterisk.agi import AGI

TIMEOUT_S = 5.0


def _arguments(env: dict[str, str]) -> tuple[str, dict[str, str]]:
    method = env.get("agi_arg_1", "")
    args: dict[str, str] = {}
    index = 2
    while (arg := env.get(f"agi_arg_{index}")) is not None:
        name, _, value = arg.partition("=")
        args[name] = value
        index += 1
    if env.get("agi_uniqueid"):
        args["call_id"] = env["agi_uniqueid"]
    return method, args


def _ask(api: str, method: str, args: dict[str, str]) -> str:
    """The shim's plain answer (`Allowed …`, `Saved …`, `Declined E_…`), or `Failed <why>`."""
    url = f"{api}/{urllib.parse.quote(method)}?{urllib.parse.urlencode(args)}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return str(response.read().decode("utf-8")).strip()
    except urllib.error.HTTPError as exc:
        return f"Failed HTTP_{exc.code}"
    except OSError as exc:
        return f"Failed {type(exc).__name__}"


def main() -> int:
    agi = AGI()
    method, args = _arguments(agi.env)
    answer = _ask(os.environ.get("CALLGATE_SCRIPT_API", ""), method, args)
    words = answer.split()
    result = words[0] if words else "Failed"
    if result == "Allowed" and len(words) > 1:
        agi.set_variable("CALLGATE_MAXTIME", words[1])
    if result == "Declined" and len(words) > 1:
        agi.set_variable("CALLGATE_ERROR", words[1])
    agi.set_variable("CALLGATE_ANSWER", answer.replace('"', "'"))
    agi.set_variable("CALLGATE_RESULT", result)  # last: the dialplan tests it
    return 0


if __name__ == "__main__":
    sys.exit(main())
