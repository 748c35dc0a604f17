"""atheris target: the POP3 pre-login dialogue (proxy/pop3/dialogue.py) over the reader."""

from __future__ import annotations

import atheris
from _harness import dialogue_target, main

with atheris.instrument_imports():
    from proxy.pop3.dialogue import Pop3Dialogue

if __name__ == "__main__":
    main(dialogue_target(Pop3Dialogue))
