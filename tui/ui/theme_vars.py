"""App-specific theme variables (``$bitmap-frozen``, ...) and their defaults.

Defaults point at the current theme's own colours, so every theme works without defining them;
a theme may set any of them in its ``variables`` to override. No colour is named here.
"""

from __future__ import annotations

from collections.abc import Mapping

# variable → theme variable it defaults to
APP_VARIABLES: dict[str, str] = {
    "bitmap-active": "success",
    "bitmap-disabled": "text-muted",
    "bitmap-frozen": "warning",
    "bitmap-inconsistent": "error",
    "link-connected": "success",
    "link-connecting": "warning",
    "link-disconnected": "error",
    "link-failed": "error",
    "job-running": "accent",
    "job-paused": "warning",
    "job-waiting": "secondary",
    "job-ready": "secondary",
    "job-pending": "text-muted",
    "job-completed": "success",
    "job-failed": "error",
    "job-cancelled": "warning",
    "job-lost": "error",
    "image-valid": "success",
    "image-pending": "warning",
    "image-invalid": "error",
    "progress-bar": "primary",
    "progress-empty": "text-disabled",
    "event-error": "error",
    "event-warning": "warning",
    "event-info": "foreground",
    "event-time": "text-muted",
    "node-name": "foreground",
}


def resolve_defaults(theme_colors: Mapping[str, str]) -> dict[str, str]:
    """The app variables' default values, taken from the theme's generated colour variables."""
    out = {}
    for name, ref in APP_VARIABLES.items():
        value = theme_colors.get(ref) or theme_colors.get("foreground") or "ansi_default"
        out[name] = value
    return out
