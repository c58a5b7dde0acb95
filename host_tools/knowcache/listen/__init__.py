"""Live keyword spotting from the host microphone (`knowcache listen`)."""
