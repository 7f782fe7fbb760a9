"""The core: everything without Textual, ordered in layers (see CONTRIBUTING.md)."""
