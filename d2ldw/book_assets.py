"""Sphinx extension: serve the widget manager and its modules from the book's own _static.

Pages with widgets load, in this order (``nb_ipywidgets_js`` in _config.yml):
``_static/widgets/require.js`` (requirejs 2.3.8), ``_static/widgets/widget_loader.js``
(points require.js at this folder) and ``_static/widgets/embed-amd.js``
(@jupyter-widgets/html-manager 1.0.15, with the font files it references), which loads
``_static/widgets/anywidget.js``, the AMD build shipped in the installed anywidget wheel.
The npm packages come from ``node_modules`` (``npm ci`` with the committed
package-lock.json); nothing is fetched from a CDN when a page is read.

Hand-written plumbing, used only when building the book.
"""
import shutil
from importlib import resources
from pathlib import Path

from sphinx.errors import ExtensionError

FOLDER = "widgets"  # under the output's _static
HTML_MANAGER = Path("node_modules/@jupyter-widgets/html-manager/dist")
FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")


def asset_sources(srcdir):
    """``{file name in _static/widgets: source path}``; ExtensionError if one is missing."""
    srcdir = Path(srcdir)
    manager = srcdir / HTML_MANAGER
    if not (manager / "embed-amd.js").is_file() \
            or not (srcdir / "node_modules/requirejs/require.js").is_file():
        raise ExtensionError(
            f"the widget manager and require.js are missing from {srcdir / 'node_modules'}: "
            "run `npm ci` in the repository root (needs Node.js 20 and npm; `make book` "
            "does it)")
    sources = {"require.js": srcdir / "node_modules/requirejs/require.js",
               "embed-amd.js": manager / "embed-amd.js",
               "anywidget.js": Path(str(resources.files("anywidget") / "nbextension/index.js")),
               "widget_loader.js": Path(str(resources.files("d2ldw") / "static/widget_loader.js"))}
    sources.update({font.name: font for font in sorted(manager.iterdir())
                    if font.suffix in FONT_SUFFIXES})
    return sources


def check_assets(app):
    if app.builder.format == "html":
        asset_sources(app.srcdir)  # fail at the start of a build, not after executing everything


def copy_assets(app, exception):
    if exception is not None or app.builder is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / FOLDER
    target.mkdir(parents=True, exist_ok=True)
    for name, source in asset_sources(app.srcdir).items():
        shutil.copyfile(source, target / name)


def setup(app):
    app.connect("builder-inited", check_assets)
    app.connect("build-finished", copy_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
