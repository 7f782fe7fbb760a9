"""The Textual console: app, screens, widgets, palette and themes (the only Textual importers)."""
