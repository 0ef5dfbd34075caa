"""What every region process stands on: the run spec, the region shell, the run directory,
logging, seeding and checkpoints. Imports nothing from the regions or the orchestrator."""
