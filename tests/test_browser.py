"""The built book in a real browser: headless Chromium (Debian's), driven by
Playwright.

Every page is served from 127.0.0.1 and opened; a JavaScript error, a failed
request, a request to any other host, a missing image, an empty widget area or
an internal link that does not resolve fails the test. On the explorer pages,
the controls are moved over a grid of settings (impossible ones included) and
what the page shows is compared with what d2ldw computes in Python; the
explorers' JavaScript arithmetic is also compared with Python's over every value
of their controls. Screenshots go to the test's tmp folder and
_build/screenshots/.
"""

import functools
import html as html_lib
import itertools
import os
import re
import shutil
import threading
import urllib.parse
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import d2ldw
from conftest import REPO
from d2ldw import explorers
from test_book import PAGES

# Debian's chromium here and in CI; $CHROMIUM names another build of it (GitHub's runners
# ship Google Chrome: .github/workflows/tests.yml sets CHROMIUM to it).
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
EXPLORER_PAGES = {
    "conv": "chapters/conv2d/from_scratch",
    "cost": "chapters/separable/counting",
    "depthwise": "chapters/depthwise/depthwise_as_groups",
}
SCREENSHOTS = REPO / "_build" / "screenshots"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(built_book):
    result = built_book.result
    if result.returncode != 0:
        pytest.fail(
            "the book did not build (see test_book.py): "
            + result.stdout[-2000:]
            + result.stderr[-2000:]
        )
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0),
        functools.partial(QuietHandler, directory=str(built_book.html)),
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", built_book.html
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            "headless Chromium is needed for this test and was not found "
            f"at {CHROMIUM}. Install it (Debian): apt-get update && "
            "apt-get install -y chromium   (never `playwright install`)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for picture in folder.glob("*.png"):
        shutil.copy(picture, SCREENSHOTS / picture.name)


class Visit:
    """One page, opened with every failure recorded."""

    def __init__(self, browser, origin, page_name):
        self.problems = []
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 900}
        )
        self.page = self.context.new_page()
        host = urllib.parse.urlsplit(origin).netloc
        page = self.page
        page.on(
            "pageerror",
            lambda error: self.problems.append(f"JavaScript error: {error}"),
        )
        page.on("console", self.on_console)
        page.on(
            "requestfailed",
            lambda request: self.problems.append(
                f"failed request: {request.url} ({request.failure})"
            ),
        )
        page.on(
            "response",
            lambda response: (
                response.status >= 400
                and self.problems.append(
                    f"HTTP {response.status}: {response.url}"
                )
            ),
        )

        def check_host(request):
            parts = urllib.parse.urlsplit(request.url)
            if parts.scheme not in ("blob", "data") and parts.netloc != host:
                self.problems.append(f"request to another host: {request.url}")

        page.on("request", check_host)
        page.goto(origin + page_name + ".html", wait_until="load")

    def on_console(self, message):
        # Chromium asks every site for /favicon.ico by itself; the book declares
        # no icon, so that 404 is the browser's, not a resource the page uses.
        if message.type == "error" and not message.location.get(
            "url", ""
        ).endswith("/favicon.ico"):
            self.problems.append(
                f"console error: {message.text} ({message.location})"
            )

    def close(self):
        self.context.close()


def widgets_rendered(page):
    """Wait until every embedded widget view has a non-empty area; return how
    many."""
    views = page.locator(
        'script[type="application/vnd.jupyter.widget-view+json"]'
    ).count()
    if views:
        page.wait_for_function(
            """n => [...document.querySelectorAll(
                 'script[type="application/vnd.jupyter.widget-view+json"]')]
               .map(s => s.previousElementSibling)
               .filter(a => a && a.classList.contains('widget-subarea')
                       && a.offsetHeight > 20
                       && a.textContent.trim().length > 0)
               .length === n""",
            arg=views,
            timeout=20000,
        )
    return views


@functools.lru_cache(maxsize=None)
def ids_in(path):
    text = path.read_text(errors="replace")
    return {html_lib.unescape(i) for i in re.findall(r'\bid="([^"]*)"', text)}


def broken_links(page, origin, root):
    broken = []
    hrefs = page.eval_on_selector_all(
        "a[href]", "links => links.map(a => a.href)"
    )
    for href in sorted(set(hrefs)):
        if not href.startswith(origin):
            continue
        parts = urllib.parse.urlsplit(href)
        path = urllib.parse.unquote(parts.path)
        target = root / path.lstrip("/")
        if path.endswith("/"):
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{href}: no file {target.relative_to(root)}")
        elif (
            parts.fragment
            and target.suffix == ".html"
            and urllib.parse.unquote(parts.fragment) not in ids_in(target)
        ):
            where = target.relative_to(root)
            broken.append(f"{href}: no id {parts.fragment!r} in {where}")
    return broken


def sideways_scrolling(page):
    """Code cells and printed output wider than the text column, at 1280 px.

    Code is kept within 80 characters, which fit at the book's code size
    (_static/d2ldw.css); output wraps there. A block that still scrolls
    sideways is reported with its longest line.
    """
    wide = page.eval_on_selector_all(
        "div.cell_input pre, div.cell_output pre",
        "blocks => blocks.filter(b => b.scrollWidth > b.clientWidth + 1)"
        ".map(b => b.textContent.split('\\n')"
        ".reduce((a, l) => l.length > a.length ? l : a, ''))",
    )
    return [f"scrolls sideways: {line[:100]!r} ({len(line)} characters)"
            for line in wide]


@pytest.mark.parametrize("page_name", PAGES)
def test_page_loads_offline_with_everything_in_place(browser, site, page_name):
    origin, root = site
    visit = Visit(browser, origin, page_name)
    try:
        page = visit.page
        views = widgets_rendered(page)
        assert views == (1 if page_name in EXPLORER_PAGES.values() else 0), (
            page_name
        )
        page.wait_for_function(
            "[...document.images].every(i => i.complete)", timeout=10000
        )
        missing = page.eval_on_selector_all(
            "img",
            "images => images.filter(i => i.naturalWidth === 0)"
            ".map(i => i.src)",
        )
        problems = visit.problems + [f"missing image: {src}" for src in missing]
        problems += broken_links(page, origin, root)
        problems += sideways_scrolling(page)
        assert problems == [], "\n".join(problems)
    finally:
        visit.close()


# ---- the explorers, driven through their controls
# -----------------------------------------


def set_control(explorer, name, values, value):
    """Move a slider to ``value`` as dragging does: set it, fire "input"."""
    explorer.locator(f'input[data-control="{name}"]').evaluate(
        "(el, i) => { el.value = String(i); "
        "el.dispatchEvent(new Event('input', {bubbles: true})); }",
        list(values).index(value),
    )


def text(explorer, selector):
    found = explorer.locator(selector)
    return found.inner_text() if found.count() else None


def count(shown):
    return int(shown.replace(",", ""))


@pytest.fixture(scope="module")
def explorer_page(browser, site):
    """Open one explorer's page: (page, explorer root, problems list)."""
    origin, _ = site
    visits = []

    def open_page(kind):
        visit = Visit(browser, origin, EXPLORER_PAGES[kind])
        visits.append(visit)
        widgets_rendered(visit.page)
        explorer = visit.page.locator(".d2ldw-explorer")
        explorer.scroll_into_view_if_needed()
        return visit.page, explorer, visit.problems

    yield open_page
    for visit in visits:
        visit.close()


def conv_settings():
    """A seeded sample of the explorer's settings, plus impossible ones of each
    kind."""
    rng = np.random.default_rng(0)
    names = list(explorers.CONV_CONTROLS)
    settings = []
    for _ in range(36):
        setting = {
            n: int(rng.choice(list(explorers.CONV_CONTROLS[n]))) for n in names
        }
        setting["depthwise"] = bool(rng.random() < 0.3)
        settings.append(setting)
    base = dict(
        size=7,
        kernel_size=3,
        stride=1,
        padding=1,
        dilation=1,
        in_channels=4,
        out_channels=6,
        groups=2,
        multiplier=2,
        depthwise=False,
    )
    settings += [
        dict(base, groups=4),
        dict(base, in_channels=6, out_channels=8, groups=3),
        dict(base, size=2, kernel_size=5, padding=0),
        dict(base, size=1, kernel_size=2, dilation=3, padding=1),
        dict(
            base, depthwise=True, size=3, kernel_size=5, dilation=2, padding=0
        ),
        dict(base, in_channels=8, out_channels=8, groups=8, size=12, stride=3),
    ]
    return settings


def expected_conv(setting):
    """What d2ldw says, straight from conv2d_geometry and conv2d_cost."""
    input_shape, weight_shape, groups = explorers.conv_layer_shapes(
        setting["size"],
        setting["kernel_size"],
        setting["in_channels"],
        setting["out_channels"],
        setting["groups"],
        setting["depthwise"],
        setting["multiplier"],
    )
    args = (setting["stride"], setting["padding"], setting["dilation"], groups)
    try:
        geometry = d2ldw.conv2d_geometry(input_shape, weight_shape, *args)
    except ValueError as error:
        return None, str(error), None, None
    cost = d2ldw.conv2d_cost(input_shape, weight_shape, *args)
    return str(geometry.output_shape), None, cost.mult_adds, cost.params


def test_conv_explorer_shows_what_d2ldw_computes(explorer_page, shots):
    page, explorer, problems = explorer_page("conv")
    explorer.screenshot(path=str(shots / "conv_explorer.png"))
    errors = 0
    settings = conv_settings()
    for setting in settings:
        mode = "depthwise" if setting["depthwise"] else "grouped"
        explorer.locator(f'input[data-control="{mode}"]').check()
        for name, values in explorers.CONV_CONTROLS.items():
            set_control(explorer, name, values, setting[name])
        shape, error, mult_adds, params = expected_conv(setting)
        if error is None:
            assert text(explorer, ".d2ldw-output-shape") == shape, setting
            assert count(text(explorer, ".d2ldw-mult-adds")) == mult_adds, (
                setting
            )
            assert count(text(explorer, ".d2ldw-params")) == params, setting
            assert text(explorer, ".d2ldw-error-message") is None
            check_window(explorer, setting, shape)
        else:
            errors += 1
            assert text(explorer, ".d2ldw-error-message") == error, setting
            assert text(explorer, ".d2ldw-output-shape") == "none"
            assert explorer.locator("rect.d2ldw-tap").count() == 0
        if setting["depthwise"]:
            groups, out_channels = (
                setting["in_channels"],
                setting["in_channels"] * setting["multiplier"],
            )
        else:
            groups, out_channels = setting["groups"], setting["out_channels"]
        check_connections(
            explorer,
            setting["in_channels"],
            out_channels,
            groups,
            drawn=setting["in_channels"] % groups == 0
            and out_channels % groups == 0,
        )
        if setting is settings[-5]:  # groups=3 with 6 and 8 channels
            explorer.screenshot(path=str(shots / "conv_explorer_error.png"))
    assert errors >= 6
    assert problems == []


def check_window(explorer, setting, shape):
    """The orange taps are window_taps' pixels: at the output position shown
    (kept from the previous setting when it still fits) and at the output cells
    clicked."""
    out_h, out_w = eval(shape)[1:]
    shown = eval(text(explorer, ".d2ldw-position"))
    for position in [shown, (out_h - 1, out_w - 1), (0, out_w // 2)]:
        if text(explorer, ".d2ldw-position") != str(position):
            explorer.locator(
                f'rect.d2ldw-out[data-row="{position[0]}"]'
                f'[data-col="{position[1]}"]'
            ).click()
        assert text(explorer, ".d2ldw-position") == str(position), (
            setting,
            shown,
            shape,
        )
        taps = explorer.locator("rect.d2ldw-tap").evaluate_all(
            "rects => rects.map(r => "
            "[Number(r.dataset.row), Number(r.dataset.col)])"
        )
        args = (
            setting["kernel_size"],
            setting["stride"],
            setting["dilation"],
            setting["padding"],
        )
        rows = explorers.window_taps(position[0], *args)
        cols = explorers.window_taps(position[1], *args)
        assert sorted(map(tuple, taps)) == sorted(
            itertools.product(rows.tolist(), cols.tolist())
        )


def check_connections(explorer, in_channels, out_channels, groups, drawn):
    links = explorer.locator("line.d2ldw-link").evaluate_all(
        "lines => lines.map(l => [Number(l.dataset.out), Number(l.dataset.in)])"
    )
    if not drawn:
        assert links == []
        return
    expected = np.argwhere(
        d2ldw.channel_connections(in_channels, out_channels, groups)
    )
    assert sorted(map(tuple, links)) == sorted(map(tuple, expected.tolist()))


def test_conv_explorer_reacts_to_the_keyboard_and_plays(explorer_page):
    page, explorer, problems = explorer_page("conv")
    for name, value in [
        ("size", 7),
        ("kernel_size", 3),
        ("stride", 1),
        ("padding", 0),
        ("dilation", 1),
        ("in_channels", 4),
        ("out_channels", 6),
        ("groups", 2),
    ]:
        set_control(explorer, name, explorers.CONV_CONTROLS[name], value)
    assert text(explorer, ".d2ldw-output-shape") == "(6, 5, 5)"
    explorer.locator('input[data-control="kernel_size"]').focus()
    page.keyboard.press("ArrowRight")  # a real key press: kernel 3 -> 4
    assert text(explorer, ".d2ldw-output-shape") == "(6, 4, 4)"
    assert text(explorer, ".d2ldw-position") == "(0, 0)"
    explorer.locator(".d2ldw-play").click()
    page.wait_for_function(
        "document.querySelector('.d2ldw-position').textContent !== '(0, 0)'",
        timeout=5000,
    )
    explorer.locator(".d2ldw-play").click()  # pause
    assert explorer.locator(".d2ldw-play").inner_text().endswith("play")
    assert problems == []


def variants_shown(explorer):
    rows = explorer.locator(".d2ldw-bar-row").evaluate_all(
        "rows => rows.map(r => [r.dataset.variant, r.dataset.metric, "
        "r.querySelector('.d2ldw-bar-value').textContent])"
    )
    return {(variant, metric): value for variant, metric, value in rows}


def test_cost_explorer_shows_what_d2ldw_computes(explorer_page, shots):
    page, explorer, problems = explorer_page("cost")
    explorer.screenshot(path=str(shots / "cost_explorer.png"))
    rng = np.random.default_rng(1)
    controls = explorers.COST_CONTROLS
    settings = [
        {n: int(rng.choice(list(values))) for n, values in controls.items()}
        for _ in range(30)
    ]
    settings.append(
        dict(
            in_channels=32,
            out_channels=64,
            kernel_size=3,
            size=56,
            stride=1,
            groups=128,
        )
    )
    errors = 0
    for setting in settings:
        for name, values in controls.items():
            set_control(explorer, name, values, setting[name])
        variants = explorers.layer_variants(**setting)
        shown = variants_shown(explorer)
        for name, variant in variants.items():
            if variant.error:
                errors += 1
                assert text(explorer, ".d2ldw-error-message") == variant.error
                assert shown[(name, "multAdds")] == "—"
                continue
            assert count(shown[(name, "multAdds")]) == variant.mult_adds, (
                setting,
                name,
            )
            assert count(shown[(name, "params")]) == variant.params, (
                setting,
                name,
            )
            assert count(shown[(name, "bytes")]) == variant.bytes_moved, (
                setting,
                name,
            )
            assert shown[(name, "intensity")] == f"{variant.intensity:.2f}", (
                setting,
                name,
            )
        if not variants["grouped"].error:
            assert text(explorer, ".d2ldw-error-message") is None
        # the same cost through conv2d_cost directly, for the full layer
        k, c, n, size = (
            setting[x]
            for x in ("kernel_size", "in_channels", "out_channels", "size")
        )
        full = d2ldw.conv2d_cost(
            (c, size, size), (n, c, k, k), setting["stride"], k // 2
        )
        assert count(shown[("full", "multAdds")]) == full.mult_adds
        ratio = explorers.separable_ratio(n, k)
        counted = Fraction(
            variants["separable"].mult_adds, variants["full"].mult_adds
        )
        assert (
            text(explorer, ".d2ldw-counted-ratio") == str(counted) == str(ratio)
        )
        assert text(explorer, ".d2ldw-formula-ratio") == str(ratio)
    assert errors >= 3
    assert problems == []


def test_depthwise_explorer_shows_what_d2ldw_computes(explorer_page, shots):
    page, explorer, problems = explorer_page("depthwise")
    explorer.screenshot(path=str(shots / "depthwise_explorer.png"))
    controls = explorers.DEPTHWISE_CONTROLS
    for c, m, k in itertools.product(*controls.values()):
        if (c + m + k) % 3:  # a third of the grid, every value of every control
            continue
        for name, value in zip(controls, (c, m, k)):
            set_control(explorer, name, controls[name], value)
        filters = explorer.locator(".d2ldw-filter").evaluate_all(
            "cards => cards.map(f => [Number(f.dataset.outputChannel), "
            "Number(f.dataset.inputChannel), Number(f.dataset.indexInChannel)])"
        )
        assert filters == [
            list(f) for f in explorers.depthwise_filters(c, m, k)
        ]
        assert text(explorer, ".d2ldw-weight-shape") == str((c * m, 1, k, k))
        memory = explorer.locator(".d2ldw-element").evaluate_all(
            "cells => cells.map(e => Number(e.dataset.inputChannel))"
        )
        assert memory == explorers.depthwise_memory_channels(c, m, k).tolist()
    for name, value in zip(controls, (3, 4, 3)):
        set_control(explorer, name, controls[name], value)
    explorer.locator('.d2ldw-filter[data-output-channel="6"]').click()
    assert text(explorer, ".d2ldw-detail-channel") == "1 = 6 // 4"
    explorer.locator('input[data-control="reshaped"]').check()
    assert explorer.locator(".d2ldw-row-label").count() == 3
    explorer.screenshot(path=str(shots / "depthwise_explorer_reshaped.png"))
    page.screenshot(path=str(shots / "chapter_page.png"))
    assert problems == []


def test_javascript_arithmetic_equals_python_over_every_control_value(
    explorer_page,
):
    """The explorers' own ES module (from the page's widget state) against
    d2ldw.explorers."""
    spatial = list(
        itertools.product(
            *(
                explorers.CONV_CONTROLS[n]
                for n in (
                    "size",
                    "kernel_size",
                    "stride",
                    "padding",
                    "dilation",
                )
            )
        )
    )
    channel_sets = [
        (4, 6, 2, False, 1),
        (6, 8, 4, False, 1),
        (3, 3, 1, True, 3),
    ]
    grid = [s + c for s in spatial for c in channel_sets]
    grid += [
        (7, 3, 2, 1, 2, c, o, g, False, 1)
        for c, o, g in itertools.product(range(1, 9), repeat=3)
    ]
    grid += [
        (5, 3, 1, 0, 1, c, 1, 1, True, m)
        for c in range(1, 9)
        for m in range(1, 5)
    ]
    names = (
        "size",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "in_channels",
        "out_channels",
        "groups",
        "depthwise",
        "multiplier",
    )
    settings = [dict(zip(names, row)) for row in grid]
    cost_grid = [
        dict(
            in_channels=c,
            out_channels=n,
            kernel_size=k,
            size=s,
            stride=st,
            groups=g,
        )
        for c, n, g in itertools.product(
            explorers.COST_CONTROLS["in_channels"],
            explorers.COST_CONTROLS["out_channels"],
            explorers.COST_CONTROLS["groups"],
        )
        for k, s, st in [(3, 14, 1), (4, 7, 2)]
    ]
    page, explorer, problems = explorer_page("conv")
    js = page.evaluate(
        """async ([settings, costGrid]) => {
             const state = JSON.parse(document.querySelector(
               'script[type="application/vnd.jupyter.widget-state+json"]')
               .textContent);
             const esm = Object.values(state.state)
               .find(m => m.state._esm).state._esm;
             const url = URL.createObjectURL(
               new Blob([esm], {type: "text/javascript"}));
             const m = await import(url);
             const conv = settings.map(c => { const r = m.exploreConv(c);
               return [r.outputShape, r.error, r.multAdds, r.params,
                       r.weightShape]; });
             const cost = costGrid.map(c => { const v = m.layerVariants(c);
               return ["full", "grouped", "depthwise", "separable"].map(n =>
                 [v[n].multAdds, v[n].params, v[n].bytes, v[n].intensity,
                  v[n].error]); });
             const filters = [];
             for (let c = 1; c <= 8; c++) for (let k = 1; k <= 4; k++)
               filters.push(m.depthwiseFilters(c, k));
             return [conv, cost, filters];
           }""",
        [settings, cost_grid],
    )
    conv, cost, filters = js
    for setting, shown in zip(settings, conv):
        r = explorers.explore_conv(**setting)
        expected = [
            None if r.output_shape is None else list(r.output_shape),
            r.error,
            r.mult_adds,
            r.params,
            list(r.weight_shape),
        ]
        assert shown == expected, setting
    for setting, shown in zip(cost_grid, cost):
        variants = explorers.layer_variants(**setting)
        assert shown == [
            list(variants[n])
            for n in ("full", "grouped", "depthwise", "separable")
        ], setting
    assert filters == [
        [list(f) for f in explorers.depthwise_filters(c, m)]
        for c in range(1, 9)
        for m in range(1, 5)
    ]
    assert problems == []
