"""The orchestrator: spec, run directory, launching and supervising the regions."""
