"""The operator's console at /console: server-rendered pages (Jinja2) made lively with htmx,
charts by uPlot; both vendored under static/, nothing from a CDN, no build step.

An admin key sees everything; any other key sees its own usage, tasks, gallery and playground.
The session is a database row any instance reads (session.py); its cookie (HttpOnly,
SameSite=Strict) holds a signed random id, never the key. Signing out or disabling the key
revokes it. Every form carries a CSRF token bound to the session and is parsed by the admin API's
own models; every answer forbids framing (render.SECURITY_HEADERS).
"""

from fastapi import APIRouter

from pixelgate.console import pages, playground

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(playground.router)

__all__ = ["router", "pages"]
