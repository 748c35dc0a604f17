"""atheris target: the IMAP pre-login dialogue (proxy/imap/dialogue.py) over the reader."""

from __future__ import annotations

import atheris
from _harness import dialogue_target, main

with atheris.instrument_imports():
    from proxy.imap.dialogue import ImapDialogue

if __name__ == "__main__":
    main(dialogue_target(ImapDialogue))
