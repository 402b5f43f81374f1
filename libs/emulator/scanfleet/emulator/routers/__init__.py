"""One router per Nessus resource; each is built from the emulator state it serves."""
