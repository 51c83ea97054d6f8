"""The console's two secrets: the gateway token a person typed once, and the CSRF token of their browser.

Both live in HttpOnly, SameSite=Strict cookies: the gateway token never reaches a page, a URL or a log,
and a state-changing request must echo the CSRF cookie in a form field or header (double submit), so
another site can neither read the token nor make the browser act with it.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

TOKEN_COOKIE = "workbench_token"
CSRF_COOKIE = "workbench_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class CsrfRefused(Exception):
    """A state-changing request without the browser's CSRF token, or from another origin."""


def gateway_token(request: Request) -> str:
    return request.cookies.get(TOKEN_COOKIE, "")


def csrf_token(request: Request) -> str:
    """This browser's CSRF token; a new one (set on the response by remember_csrf) on its first visit."""
    if not hasattr(request.state, "csrf"):
        request.state.csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    return request.state.csrf


def remember_csrf(request: Request, response: Response) -> None:
    if request.cookies.get(CSRF_COOKIE) != csrf_token(request):
        _set_cookie(request, response, CSRF_COOKIE, csrf_token(request))


def remember_token(request: Request, response: Response, token: str) -> None:
    _set_cookie(request, response, TOKEN_COOKIE, token)


def forget_token(response: Response) -> None:
    response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="strict")


async def check_csrf(request: Request) -> None:
    """Raises CsrfRefused unless a state-changing request carries this browser's token from this origin."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise CsrfRefused(f"a request from another origin ({origin}) was refused")
    expected = request.cookies.get(CSRF_COOKIE, "")
    presented = request.headers.get(CSRF_HEADER, "")
    if not presented:
        form = await request.form()  # parsed once: the handler reads the same form
        presented = str(form.get(CSRF_FIELD, ""))
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise CsrfRefused("the form's security token is missing or stale: reload the page and try again")


def local_path(target: str, default: str = "/") -> str:
    """target when it is a path on this site; never an absolute or protocol-relative URL (open redirects)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def _set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(name, value, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
