"""The host's files and processes: writing files, status files, triggers, locks, /proc,
leftovers."""
