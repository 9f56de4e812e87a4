"""The page, its static files, and the health check."""

from __future__ import annotations

import httpx

from conftest import RunningServer


def test_page_links_its_script_and_style(server: RunningServer, client: httpx.Client):
    response = client.get(server.url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "/static/app.js" in page
    assert "/static/style.css" in page
    assert "0</span> of 3 messages" in page
    assert "<script>" not in page, "no inline script: the page works under a strict CSP"


def test_static_files_are_served(server: RunningServer, client: httpx.Client):
    script = client.get(server.url + "/static/app.js")
    assert script.status_code == 200
    assert "textContent" in script.text
    # The page's scripts are ES modules: a browser runs one only with a JavaScript type.
    module = client.get(server.url + "/static/sse-client.js")
    assert module.status_code == 200
    assert "javascript" in module.headers["content-type"]
    assert "EventSource" in module.text
    assert client.get(server.url + "/static/style.css").status_code == 200


def test_healthz(server: RunningServer, client: httpx.Client):
    response = client.get(server.url + "/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
