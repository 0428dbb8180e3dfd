"""A PNG of a page written by `etspipe view` (how docs/viewer.png is made from `make demo`'s report.html).

    python scripts/page_screenshot.py demo_out/report.html docs/viewer.png --seek 1.2

Opens the page in headless Chromium (see etspipe_view.browser), optionally
seeks the first video so a caption and the playing event show, and saves the
top of the page at the given size (a small PNG for the README).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from etspipe_view.browser import browser_missing, chromium


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=1250)
    ap.add_argument("--seek", type=float, default=None, help="seek the first video to this time (s)")
    ap.add_argument("--scroll", type=str, default=None, help="CSS selector to scroll to the top first")
    args = ap.parse_args()
    missing = browser_missing()
    if missing:
        raise SystemExit(f"error: {missing}")
    with chromium() as browser:
        pg = browser.new_page(viewport={"width": args.width, "height": args.height})
        pg.goto(args.page.resolve().as_uri())
        pg.wait_for_selector("#v-0:not(.pending)")
        if args.seek is not None:
            pg.wait_for_function("document.querySelector('#v-0 video').readyState >= 2", timeout=20_000)
            pg.evaluate(f"document.querySelector('#v-0 video').currentTime = {args.seek}")
            pg.wait_for_function("!document.querySelector('#v-0 video').seeking")
            pg.wait_for_timeout(300)
        if args.scroll:
            pg.evaluate(f"document.querySelector({args.scroll!r}).scrollIntoView()")
        args.png.parent.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(args.png))
    print(f"wrote {args.png} ({args.png.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
