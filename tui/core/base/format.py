"""Human units for sizes, rates and durations (shared by the CLI and the screens)."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int | float | None) -> str:
    """1536 → '1.5 KiB'; exact powers print without decimals ('64 KiB')."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover - loop always returns


def human_rate(bytes_per_s: float | None) -> str:
    if not bytes_per_s:
        return "-"
    return f"{human_bytes(bytes_per_s)}/s"


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def percent(part: int, whole: int) -> str:
    if whole <= 0:
        return "-"
    pct = 100.0 * part / whole
    return f"{pct:.0f}%" if pct >= 10 or pct == 0 else f"{pct:.1f}%"
