"""Reusable widgets of the console (tables updated by diff, the event log)."""
