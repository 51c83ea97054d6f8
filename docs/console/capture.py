"""Re-takes the README's console screenshots from a running stack after `make demo`:
    .venv/bin/python docs/console/capture.py [http://127.0.0.1:8080]
It opens the demo's newest INT8 project and its report in the system's Chromium."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from workbench import WorkbenchClient

HERE = Path(__file__).parent


def main(url: str) -> None:
    with WorkbenchClient() as client:
        child = next(p for p in client.list_projects() if p.parent_id)
        report = next(client.list_reports(project_id=child.id))
    pages = {
        "start": "/",
        "project": f"/projects/{child.id}",
        "compare": f"/compare?first={child.parent_id}&second={child.id}",
        "report": f"/reports/{report.id}?mode=advanced&order_by=-b",
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        for name, path in pages.items():
            page.goto(url.rstrip("/") + path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(HERE / f"{name}.png"), full_page=name == "project")
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080")
