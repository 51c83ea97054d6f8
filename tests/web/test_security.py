"""The console's guard rails over real HTTP and a real browser: the gateway token asked once and kept in an
HttpOnly, SameSite=Strict cookie (never in a page, a URL or a log), CSRF on every state change, readable
errors, and bad form input that changes nothing."""

from __future__ import annotations

import dataclasses
import html
import re
import uuid
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from services.web.app import create_app
from tests.conftest import start_services, stop_services
from tests.web.conftest import http, screenshot, start_console, stop_console
from workbench.client import WorkbenchClient

TOKEN = "console-test-" + uuid.uuid4().hex


@pytest.fixture
def guarded(s3_settings, tmp_path):
    """Services whose gateway requires TOKEN, and the console over them; yields (console, API client)."""
    settings, servers = start_services(dataclasses.replace(s3_settings, listen="127.0.0.1:0", grace_seconds=1.0,
                                                           internal_token="internal", auth_token=TOKEN))
    console = start_console(servers["gateway"].address, tmp_path)
    api = WorkbenchClient(servers["gateway"].address, token=TOKEN)
    yield console, api
    api.close()
    stop_console(console)
    stop_services(servers)


class Browserless:
    """A cookie jar and the CSRF dance over plain HTTP."""

    def __init__(self, url: str):
        self.url, self.cookies = url, {}

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None):
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        status, body, response_headers = http(self.url + path, data, headers, method)
        for line in [v for k, v in response_headers.items() if k.lower() == "set-cookie"]:
            for name, morsel in SimpleCookie(line).items():
                self.cookies[name] = morsel.value
        return status, body, response_headers

    def csrf(self) -> str:
        if "workbench_csrf" not in self.cookies:
            self.request("/login")
        return self.cookies["workbench_csrf"]

    def post(self, path: str, fields: dict, files: dict | None = None, csrf: bool = True, headers: dict | None = None):
        fields = {**fields, **({"csrf": self.csrf()} if csrf else {})}
        if files is None:
            return self.request(path, urlencode(fields).encode(),
                                {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}, "POST")
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields.items()]
        for name, (file_name, content) in files.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{file_name}"\r\n'
                         f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request(path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}",
                                          **(headers or {})}, "POST")


def signed_in(console) -> Browserless:
    session = Browserless(console.url)
    status, _, _ = session.post("/login", {"token": TOKEN, "next": "/"})
    assert status == 303
    return session


def test_the_token_is_asked_once_and_never_shown(guarded, page):
    console, api = guarded
    page.goto(console.url)
    page.wait_for_url("**/login?next=/")
    page.locator("input[name=token]").fill("not-the-token")
    page.locator("form[action='/login'] button").click()
    expect(page.locator(".error-message")).to_have_text("The gateway refused this token.")
    assert not [c for c in page.context.cookies() if c["name"] == "workbench_token"]
    screenshot(page, "00-sign-in")

    page.locator("input[name=token]").fill(TOKEN)
    page.locator("form[action='/login'] button").click()
    page.wait_for_url(console.url + "/")
    expect(page.locator("h1")).to_have_text("Projects")
    cookie, = [c for c in page.context.cookies() if c["name"] == "workbench_token"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find(TOKEN) == -1, "scripts cannot read it"
    for shown in (page.content(), page.url):
        assert TOKEN not in shown
    api_projects = list(api.list_projects())
    assert api_projects == []
    assert TOKEN not in console.log.read_text()


def test_state_changes_need_the_csrf_token(guarded):
    console, api = guarded
    session = signed_in(console)
    fields = {"name": "made by another site", "model_id": "mdl_x", "dataset_id": "dst_x"}
    status, body, _ = session.post("/projects", fields, csrf=False)
    assert status == 403 and "security token" in body
    status, body, _ = session.post("/projects", fields, headers={"Origin": "https://evil.example"})
    assert status == 403 and "another origin" in body
    # every state-changing route refuses a request without the token, before doing anything
    app = create_app(api)
    posts = {route.path for route in app.routes if "POST" in (getattr(route, "methods", None) or ())}
    assert {"/projects", "/models", "/datasets", "/logout", "/login"} <= posts
    for path in posts:
        concrete = re.sub(r"\{[^}]+\}", "prj-0194f1c2a3b5e8d7c6a", path)
        assert session.post(concrete, {}, csrf=False)[0] == 403, path
    assert list(api.list_projects()) == [] and list(api.list_jobs()) == []
    # with it, the same form works
    status, body, _ = session.post("/projects", fields)
    assert status in (404, 400, 409) and "mdl_x" in body  # the gateway's own refusal, readable
    assert "Traceback" not in body


def test_bad_input_gets_a_clear_message_and_changes_nothing(guarded):
    console, api = guarded
    session = signed_in(console)
    cases = [
        ("/projects", {"name": "", "model_id": "m", "dataset_id": "d"}, None, "project name is required"),
        ("/models", {"name": "empty", "framework": "darknet"}, {"cfg": ("yolo.cfg", b"")}, "yolo.cfg is empty (0 bytes)"),
        ("/models", {"name": "no files", "framework": "darknet"}, {}, "choose the model's files"),
        ("/datasets", {"name": "no files"}, {}, "choose an archive"),
        ("/models", {"name": "x", "framework": "caffe"}, {}, "framework must be one of"),
        ("/projects/prj-0194f1c2a3b5e8d7c6a/optimize", {"subset_size": "many"}, None, "subset size must be a whole number"),
        ("/projects/prj-0194f1c2a3b5e8d7c6a/optimize", {"method": "accuracy_aware", "max_drop": "2"}, None,
         "maximum accuracy drop must be between 0 and 1"),
        ("/projects/prj-0194f1c2a3b5e8d7c6a/sweep", {"streams": "1, two"}, None, "streams must be whole numbers"),
        ("/projects/prj-0194f1c2a3b5e8d7c6a/sweep", {}, None, "give at least one list of values"),
        ("/projects/prj-0194f1c2a3b5e8d7c6a/benchmark", {"streams": "0"}, None, "streams must be between 1 and 64"),
    ]
    for path, fields, files, message in cases:
        status, body, _ = session.post(path, fields, files)
        assert status == 400, (path, fields, status, body[:500])
        assert message in html.unescape(body), (path, message)
    assert list(api.list_projects()) == [] and list(api.list_jobs()) == [] and list(api.list_models()) == []


def test_gateway_errors_read_as_messages(guarded):
    console, _ = guarded
    session = signed_in(console)
    status, body, _ = session.request("/projects/prj-0194f1c2a3b5e8d7c6a", headers={"Accept": "text/html"})
    assert status == 404 and "NOT_FOUND" in body and "prj-0194f1c2a3b5e8d7c6a" in body
    status, body, _ = session.request("/reports/not-an-id", headers={"Accept": "text/html"})
    assert status == 400 and "INVALID_ARGUMENT" in body
    for body in (body,):
        assert "Traceback" not in body and "File \"" not in body
    # without a token the console asks for it; a script gets a status, not a redirect loop
    status, _, headers = http(console.url + "/", headers={"Accept": "text/html"})
    assert status == 303 and headers["location"].startswith("/login")
    status, body, _ = http(console.url + "/projects/prj-0194f1c2a3b5e8d7c6a/sweep.png")
    assert status == 401 and "UNAUTHENTICATED" in body
    assert session.request("/healthz")[0] == 200
