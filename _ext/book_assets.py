"""Sphinx extension: serve the widget manager and its modules from _static.

Pages with widgets load, in this order (``nb_ipywidgets_js`` in _config.yml):
``_static/widgets/require.js`` (requirejs 2.3.8),
``_static/widgets/widget_loader.js`` (points require.js at this folder) and
``_static/widgets/embed-amd.js`` (@jupyter-widgets/html-manager 1.0.15, with the
font files it references), which loads ``_static/widgets/anywidget.js``, the AMD
build shipped in the installed anywidget wheel. The npm packages come from
``node_modules`` (``npm ci`` with the committed package-lock.json); nothing is
fetched from a CDN when a page is read.

It also removes a duplicate script that sphinx-thebe puts on every page (see
``drop_duplicate_scripts``). Hand-written plumbing, used only when building the
book.
"""

import json
import shutil
from importlib import resources
from pathlib import Path

from sphinx.errors import ExtensionError

FOLDER = "widgets"  # under the output's _static
HTML_MANAGER = Path("node_modules/@jupyter-widgets/html-manager/dist")
FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")


def asset_sources(srcdir):
    """``{file name in _static/widgets: source path}``; ExtensionError if one is
    missing."""
    srcdir = Path(srcdir)
    manager = srcdir / HTML_MANAGER
    if (
        not (manager / "embed-amd.js").is_file()
        or not (srcdir / "node_modules/requirejs/require.js").is_file()
    ):
        raise ExtensionError(
            "the widget manager and require.js are missing from "
            f"{srcdir / 'node_modules'}: run `npm ci` in the repository root "
            "(needs Node.js 20 and npm; `make book` does it)"
        )
    sources = {
        "require.js": srcdir / "node_modules/requirejs/require.js",
        "embed-amd.js": manager / "embed-amd.js",
        "anywidget.js": Path(
            str(resources.files("anywidget") / "nbextension/index.js")
        ),
        "widget_loader.js": Path(
            str(resources.files("d2ldw") / "static/widget_loader.js")
        ),
    }
    sources.update(
        {
            font.name: font
            for font in sorted(manager.iterdir())
            if font.suffix in FONT_SUFFIXES
        }
    )
    return sources


def check_assets(app):
    if app.builder.format == "html":
        asset_sources(
            app.srcdir
        )  # fail at the start of a build, not after executing everything


def copy_assets(app, exception):
    if (
        exception is not None
        or app.builder is None
        or app.builder.format != "html"
    ):
        return
    target = Path(app.outdir) / "_static" / FOLDER
    target.mkdir(parents=True, exist_ok=True)
    for name, source in asset_sources(app.srcdir).items():
        shutil.copyfile(source, target / name)


def refresh_widget_code(app, pagename, *args):
    """Embed the installed explorers' JavaScript and CSS in the page's widget
    state.

    A page embeds the widget state its notebook had when executed, and with
    ``execute_notebooks: cache`` a notebook whose cells did not change is not
    executed again, even when d2ldw's widget JavaScript did. Replacing ``_esm``
    and ``_css`` of d2ldw's explorers with the current ones keeps the executed
    values of the controls and never serves stale code. Runs before myst-nb adds
    the state to the page (priority 400 < 500).
    """
    from myst_nb.sphinx_ import NbMetadataCollector

    from d2ldw import widgets

    js_files = NbMetadataCollector.get_js_files(app.env, pagename)
    if "ipywidgets_state" not in js_files:
        return
    uri, attributes = js_files["ipywidgets_state"]
    state = json.loads(attributes["body"])
    for model in state["state"].values():
        values = model["state"]
        module, _, name = values.get("_anywidget_id", "").rpartition(".")
        if module == "d2ldw.widgets":
            explorer = getattr(widgets, name)
            values["_esm"], values["_css"] = (
                str(explorer._esm),
                str(explorer._css),
            )
    body = json.dumps(state).replace("</script>", r"<\/script>")
    js_files["ipywidgets_state"] = (uri, {**attributes, "body": body})


def note_widget_code(app, doctree):
    """Make a page with widgets depend on the explorers' JavaScript and CSS.

    Sphinx then writes the page again (and refresh_widget_code runs) when they
    change.
    """
    from myst_nb.sphinx_ import NbMetadataCollector

    if "ipywidgets_state" in NbMetadataCollector.get_js_files(
        app.env, app.env.docname
    ):
        for path in sorted(
            Path(str(resources.files("d2ldw") / "static")).iterdir()
        ):
            app.env.note_dependency(str(path))


def drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    """Keep one copy of each script of a page.

    sphinx-thebe 0.3.1 registers its inline configuration with no file name;
    under Sphinx 7.4 the builder re-adds it from the registry with an empty one,
    the two compare unequal, and every page declared ``const THEBE_JS_URL``
    twice, a JavaScript error. Runs after the other handlers (priority 900), so
    that it also sees the scripts myst-nb adds per page.
    """
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (
            getattr(script, "filename", script) or "",
            tuple(sorted(getattr(script, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("builder-inited", check_assets)
    app.connect("doctree-read", note_widget_code)
    app.connect("html-page-context", refresh_widget_code, priority=400)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    app.connect("build-finished", copy_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
