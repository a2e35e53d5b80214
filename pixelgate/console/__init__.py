"""The operator's console at /console: server-rendered pages (Jinja2) made lively with htmx,
charts by uPlot; both vendored under static/, nothing from a CDN, no build step.

An admin key sees everything; any other key sees its own usage, tasks, gallery and playground.
The session is a signed cookie (HttpOnly, SameSite=Strict) holding the key's SHA-256, never the
key, so any instance accepts it and a revoked key ends its sessions. Every form carries a CSRF
token bound to the session.
"""

from pixelgate.console.pages import router

__all__ = ["router"]
