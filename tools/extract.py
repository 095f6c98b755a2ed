"""Extract the book's ``#@save <module>`` cells into the d2ldw package.

    python tools/extract.py           # regenerate d2ldw/<module>.py from the chapters
    python tools/extract.py --check   # exit 1 and list the files that are out of date

A code cell whose first line is ``#@save <module>`` is copied, in book order (the
order of ``_toc.yml``), into ``d2ldw/<module>.py`` (``d2ldw/<module>/__init__.py`` for a
module that is a folder). The modules, their order and what each needs are listed once,
in ``d2ldw/_layout.py``; a generated module may import only modules listed before it
there, so the package has no import cycle. The chapter is the source: the
generated modules are never edited by hand. Three things are added per module:
a header, an import guard for the framework it needs, and imports of the
framework-free helpers (``shapes``, ``data``, ...) that its code uses by bare name,
as the chapters do. An import already made by an earlier cell of the same module is
dropped, so every cell can carry the imports it needs to run on its own. A later
section may generalise a function or class of an earlier one by defining it again
(chapter 2 adds ``groups`` to chapter 1's convolutions): the module then keeps only
the last definition, and its header line names the section it replaces.

This is a tool for the book's maintainers, not part of the installed package: it runs as a
script and reads ``d2ldw/_layout.py`` without importing d2ldw.
"""
import argparse
import ast
import builtins
import importlib.util
import json
import re
import symtable
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _load_layout(path=PACKAGE_ROOT / "d2ldw" / "_layout.py"):
    """d2ldw/_layout.py as a module of its own, without importing the package."""
    spec = importlib.util.spec_from_file_location("d2ldw_layout", path)
    layout = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = layout  # dataclasses look their module up while it runs
    spec.loader.exec_module(layout)
    return layout


LAYOUT = _load_layout()
# the generated modules, in dependency order
MODULES = {name: spec for name, spec in LAYOUT.MODULES.items() if spec.generated}
SAVE_MARK = re.compile(r"#@save(?:\s+(\S*))?\s*$")
COMMAND = "python tools/extract.py"


@dataclass(frozen=True)
class Block:
    module: str
    code: str
    origin: str  # where the cell comes from, for the block's header line
    section: str  # its section number, e.g. "1.3"


class ExtractError(ValueError):
    """A book the extractor cannot read; the message names the file at fault."""


def numbered_pages(toc):
    """(number, entry) for every chapter and section of a jb-book TOC, in order.

    Numbers are those the HTML book shows ("3" for a chapter, "3.2" for a
    section). Chapters of an unnumbered part (the appendix) get "A", "A.1"...
    """
    parts = toc.get("parts") or [
        {"chapters": toc.get("chapters", []),
         "numbered": toc.get("options", {}).get("numbered", False)}]
    counter, appendix = 0, 0
    for part in parts:
        for chapter in part.get("chapters", []):
            if part.get("numbered"):
                counter += 1
                label = str(counter)
            else:
                label = chr(ord("A") + appendix)
                appendix += 1
            yield label, chapter
            for n, section in enumerate(chapter.get("sections", []), start=1):
                yield f"{label}.{n}", section


def book_order(root):
    """The notebooks of the book in reading order, with their section numbers.

    Raises ExtractError naming the page when a TOC entry has no notebook on
    disk: the package would otherwise lose that notebook's code without a word.
    """
    import yaml  # only needed by maintainers, who have the book's requirements

    toc_path = Path(root) / "_toc.yml"
    if not toc_path.is_file():
        raise ExtractError(f"{toc_path} not found: --root must be the book's "
                           f"root folder")
    try:
        toc = yaml.safe_load(toc_path.read_text())
    except yaml.YAMLError as error:
        raise ExtractError(f"{toc_path} is not valid YAML: {error}") from None
    if not isinstance(toc, dict):
        raise ExtractError(f"{toc_path} must be a mapping with 'parts' or 'chapters', got "
                           f"{type(toc).__name__}")
    ordered = []
    for number, entry in numbered_pages(toc):
        path = Path(root) / (entry["file"] + ".ipynb")
        if not path.exists() and (Path(root) / (entry["file"] + ".md")).exists():
            continue  # a Markdown page (the API reference): no code cells to save
        if not path.exists():
            raise ExtractError(
                f"{toc_path} lists {entry['file']}, but {path} does not "
                f"exist: restore the notebook or remove it from the TOC "
                f"(regenerating now would drop its #@save cells)")
        ordered.append((number, path))
    return ordered


def _title(cells):
    for cell in cells:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "untitled"


def saved_blocks(number, notebook, root):
    """The ``#@save`` cells of one notebook, as Blocks, in cell order."""
    try:
        cells = json.loads(Path(notebook).read_text())["cells"]
        if not isinstance(cells, list):
            raise TypeError("'cells' is not a list")
        sources = ["".join(cell["source"]) for cell in cells]
    except (ValueError, KeyError, TypeError) as error:
        raise ExtractError(
            f"{notebook} is not a readable notebook: {error!r}") from None
    where = f'Section {number}, "{_title(cells)}" ({Path(notebook).relative_to(root)})'
    blocks = []
    for index, (cell, source) in enumerate(zip(cells, sources)):
        first, _, body = source.partition("\n")
        is_code = cell.get("cell_type") == "code"
        mark = SAVE_MARK.match(first.strip()) if is_code else None
        if not mark:
            continue
        if mark.group(1) not in MODULES:
            raise ExtractError(
                f"{where}, cell {index + 1}: '#@save {mark.group(1) or ''}' "
                f"names no d2ldw module; expected one of {', '.join(MODULES)}")
        try:
            ast.parse(body)
        except SyntaxError as error:
            raise ExtractError(
                f"{where}, cell {index + 1} ('#@save {mark.group(1)}'): syntax "
                f"error on line {(error.lineno or 0) + 1} of the cell: "
                f"{error.msg}") from None
        blocks.append(Block(mark.group(1), body.strip("\n"), where, number))
    return blocks


def _top_level_names(tree):
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _definitions(tree):
    return [node for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def _drop_redefined(blocks):
    """Blocks' code without the functions and classes a later block defines again.

    Returns the codes and, per block, the notes ``"replaces NAME of Section N.M"``.
    """
    last_definer = {}
    for index, block in enumerate(blocks):
        for node in _definitions(ast.parse(block.code)):
            last_definer[node.name] = index
    codes, notes = [], [[] for _ in blocks]
    for index, block in enumerate(blocks):
        lines = block.code.splitlines()
        for node in reversed(_definitions(ast.parse(block.code))):
            if last_definer[node.name] != index:
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                del lines[first - 1:node.end_lineno]
                notes[last_definer[node.name]].insert(
                    0, f"replaces {node.name} of Section {block.section}")
        codes.append(re.sub(r"\n{3,}", "\n\n\n", "\n".join(lines)).strip("\n"))
    return codes, notes


def _drop_repeated_imports(code, seen):
    """Remove top-level imports already in ``seen`` (which is updated)."""
    lines = code.splitlines()
    for node in reversed(ast.parse(code).body):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            text = ast.unparse(node)
            if text in seen:
                del lines[node.lineno - 1:node.end_lineno]
            seen.add(text)
    return "\n".join(lines).strip("\n")


def _drop_header_imports(code, needed):
    """Drop a cell's ``from d2ldw.<core> import ...`` that the header repeats.

    A cell imports the helpers it uses so that it runs on its own in its
    notebook; the generated module imports them once, at the top.
    """
    lines = code.splitlines()
    for node in reversed(ast.parse(code).body):
        if not (isinstance(node, ast.ImportFrom) and node.level == 0
                and (node.module or "").startswith("d2ldw.")):
            continue
        provided = needed.get(node.module[len("d2ldw."):], ())
        if all(alias.asname is None and alias.name in provided
               for alias in node.names):
            del lines[node.lineno - 1:node.end_lineno]
    return re.sub(r"\n{3,}", "\n\n\n", "\n".join(lines)).strip("\n")


def _core_exports(blocks_by_module):
    owner = {}
    for name, blocks in blocks_by_module.items():
        if not MODULES[name].core:
            continue
        for block in blocks:
            for symbol in _top_level_names(ast.parse(block.code)):
                if symbol.startswith("_"):
                    continue
                if owner.setdefault(symbol, name) != name:
                    raise ExtractError(f"'{symbol}' is defined in both d2ldw.{owner[symbol]} "
                                     f"and d2ldw.{name}")
    return owner


def _render_module(name, blocks, core_owner):
    spec = MODULES[name]
    seen_imports = set()
    codes, notes = _drop_redefined(blocks)
    codes = [_drop_repeated_imports(code, seen_imports) for code in codes]
    kept = [i for i, code in enumerate(codes) if code]
    blocks, codes, notes = ([b[i] for i in kept] for b in (blocks, codes, notes))
    trees = [ast.parse(code) for code in codes]
    defined = set().union(*(_top_level_names(t) for t in trees))
    used = module_scope_reads("\n\n".join(codes))  # a function's own imports are local
    needed = {}
    for symbol in sorted(used - defined - set(dir(builtins))):
        source = core_owner.get(symbol)
        if source and source != name:
            if spec.core and list(LAYOUT.MODULES).index(source) > list(
                    LAYOUT.MODULES).index(name):
                raise ExtractError(f"d2ldw.{name} uses '{symbol}' from the later core module "
                                 f"d2ldw.{source}; move the cell or reorder MODULES")
            needed.setdefault(source, []).append(symbol)
    codes = [_drop_header_imports(code, needed) for code in codes]
    public = sorted(s for s in defined if not s.startswith("_"))
    out = [f'"""{spec.doc}\n\nGenerated by ``{COMMAND}`` from the ``#@save {name}`` '
           f"cells of the book's\nchapters. Do not edit: change the chapter and regenerate.\n"
           f'"""']
    if spec.requires:
        import_name, pip_spec, extra = spec.requires
        out.append(f"from d2ldw._requires import require\n\nrequire({import_name!r}, "
                   f"{pip_spec!r}, module='d2ldw.{name}', extra={extra!r})")
    if needed:
        out.append("\n".join(f"from d2ldw.{source} import {', '.join(symbols)}"
                             for source, symbols in sorted(needed.items())))
    out.append("__all__ = [" + ", ".join(repr(s) for s in public) + "]")
    for block, code, replaced in zip(blocks, codes, notes):
        header = "".join(f"\n# ({note})" for note in replaced)
        out.append(f"\n# From {block.origin}{header}\n{code}")
    return "\n\n".join(out) + "\n"


def module_scope_reads(source, filename="<module>"):
    """Names read from the module's namespace: at top level, or as globals in a
    function or class. Found with the compiler's own symbol tables (``symtable``),
    so a name a function imports or assigns for itself is not among them."""
    top = symtable.symtable(source, filename, "exec")
    reads = set()

    def visit(table):
        for symbol in table.get_symbols():
            if symbol.is_referenced() and (table is top or symbol.is_global()):
                reads.add(symbol.get_name())
        for child in table.get_children():
            visit(child)

    visit(top)
    return reads


def undefined_names(source, filename="<module>"):
    """Names a module's code reads but neither defines, imports nor gets from builtins.

    A function reading a global the module never binds is caught at extraction
    time, not when a reader first calls it.
    """
    top = symtable.symtable(source, filename, "exec")
    bound = {s.get_name() for s in top.get_symbols()
             if s.is_assigned() or s.is_imported() or s.is_namespace()}
    bound |= set(dir(builtins)) | {"__file__", "__name__", "__doc__", "__spec__"}
    return sorted(module_scope_reads(source, filename) - bound)


def render(root=PACKAGE_ROOT):
    """The generated modules' text, keyed by path relative to ``root``."""
    blocks_by_module = {name: [] for name in MODULES}
    for number, notebook in book_order(root):
        for block in saved_blocks(number, notebook, root):
            blocks_by_module[block.module].append(block)
    empty = [name for name, blocks in blocks_by_module.items() if not blocks]
    if empty:
        raise ExtractError(f"no '#@save' cells for d2ldw module(s): {', '.join(empty)}")
    core_owner = _core_exports(blocks_by_module)
    texts = {}
    for name, blocks in blocks_by_module.items():
        path = LAYOUT.module_path(name, Path("d2ldw"))
        texts[path] = text = _render_module(name, blocks, core_owner)
        missing = undefined_names(text, str(path))
        if missing:
            raise ExtractError(
                f"{path} would use undefined name(s) {', '.join(missing)}: import "
                f"or define them in the '#@save {name}' cell that uses them")
        problems = LAYOUT.import_order_problems(name, text)
        if problems:
            raise ExtractError(f"{path}: {problems[0]}: move the code, or reorder "
                               f"d2ldw/_layout.py if the dependency is meant")
    return texts


def out_of_date(root=PACKAGE_ROOT):
    """Paths of generated modules whose committed text differs from the chapters."""
    root = Path(root)
    return [path for path, text in render(root).items()
            if not (root / path).exists() or (root / path).read_text() != text]


def main(argv=None):
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="only report modules that differ from the chapters")
    parser.add_argument("--root", type=Path, default=PACKAGE_ROOT,
                        help="the book's root folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ExtractError as error:  # one line, status 2, as for a bad command
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


def _run(args):
    if not args.root.is_dir():
        raise ExtractError(f"--root {args.root} is not a folder")
    if args.check:
        stale = out_of_date(args.root)
        for path in stale:
            print(f"out of date: {path} (run {COMMAND})", file=sys.stderr)
        return 1 if stale else 0
    for path, text in render(args.root).items():
        (args.root / path).parent.mkdir(parents=True, exist_ok=True)
        (args.root / path).write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
