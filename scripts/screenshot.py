"""Open URL in Chromium as USER (answering the Basic prompt with PASSWORD), log in to the web app
(the stand-in's account unless --email/--app-password say otherwise), send a message, wait for the
streamed reply, and save a screenshot of the page as OUT (PNG).

HTTPS: --ca FILE trusts that certificate (PEM, e.g. the stack's self-signed certificate) the way
the browser tests do (an NSS database, tests/integration/browser.py); without it the certificate
must be trusted already, or --insecure ignores certificate errors (for a quick look only)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
import browser  # noqa: E402  (tests/integration/browser.py: Chromium in its own network namespace)
from playwright.sync_api import Error, sync_playwright  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("user")
    parser.add_argument("password")
    parser.add_argument("out", type=Path)
    parser.add_argument("--email", default="user@rumi.test", help="the web app's account (the stand-in's)")
    parser.add_argument("--app-password", default="stub-password")
    parser.add_argument("--message", default="Hello! What can you do?")
    parser.add_argument("--ca", type=Path, help="a certificate (PEM) to trust")
    parser.add_argument("--insecure", action="store_true", help="ignore certificate errors")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=640)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rumistack-screenshot-") as home, sync_playwright() as driver:
        home = Path(home)
        if args.ca:
            browser.trusting_home(home, args.ca)
        chromium = browser.launch(driver, home)
        try:
            context = chromium.new_context(http_credentials={"username": args.user, "password": args.password},
                                           ignore_https_errors=args.insecure,
                                           viewport={"width": args.width, "height": args.height})
            page = context.new_page()
            response = page.goto(args.url)
            if response is None or response.status != 200:
                print(f"{args.url} answered {response.status if response else 'nothing'}", file=sys.stderr)
                return 1
            states = "(s) => s.includes(document.body.dataset.status)"
            page.wait_for_function(states, arg=["logged out", "ready", "error"])
            if page.is_visible("#login-form"):
                page.fill("#email", args.email)
                page.fill("#password", args.app_password)
                page.click("#login")
            page.wait_for_function(states, arg=["ready", "login failed", "error", "no AI provider configured"])
            if page.evaluate("() => document.body.dataset.status") == "ready":
                page.fill("#message", args.message)
                page.click("#send")
                page.wait_for_function(states, arg=["reply complete", "error"])
            status = page.text_content("#status")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            print(f"{args.out}: {status}")
            return 0 if status == "reply complete" else 1
        except Error as exc:
            print(f"the browser failed: {exc}", file=sys.stderr)
            return 1
        finally:
            chromium.close()


if __name__ == "__main__":
    sys.exit(main())
