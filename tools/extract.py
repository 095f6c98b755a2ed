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
# where a #@save cell can go: a module, or a part of a module split by concern
TARGETS = [f"{name}.{part}" if part else name for name, spec in MODULES.items()
           for part in ([p for p, _ in spec.parts if p not in spec.written] or [None])]
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
        if mark.group(1) not in TARGETS:
            raise ExtractError(
                f"{where}, cell {index + 1}: '#@save {mark.group(1) or ''}' "
                f"names no d2ldw module; expected one of {', '.join(TARGETS)}")
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
        if name not in MODULES or not MODULES[name].core:
            continue
        for block in blocks:
            for symbol in _top_level_names(ast.parse(block.code)):
                if symbol.startswith("_"):
                    continue
                if owner.setdefault(symbol, name) != name:
                    raise ExtractError(f"'{symbol}' is defined in both d2ldw.{owner[symbol]} "
                                     f"and d2ldw.{name}")
    return owner


def _written_part(module, part, root):
    """The text of a part written by hand, as committed."""
    path = Path(root) / LAYOUT.part_path(module, part, Path("d2ldw"))
    if not path.is_file():
        raise ExtractError(f"{path} is missing: d2ldw/_layout.py lists d2ldw.{module}.{part} "
                           "as a part written by hand")
    return path.read_text()


def _part_owners(module, blocks_by_target, root=PACKAGE_ROOT):
    """{symbol: part} of every top-level name the parts of ``module`` define."""
    owner = {}
    for part, _ in MODULES[module].parts:
        if part in MODULES[module].written:
            codes = [_written_part(module, part, root)]
        else:
            codes = [block.code for block in blocks_by_target.get(f"{module}.{part}", [])]
        for code in codes:
            for symbol in _top_level_names(ast.parse(code)) - {"__all__"}:
                if owner.setdefault(symbol, part) != part:
                    raise ExtractError(f"'{symbol}' is defined in both d2ldw.{module}."
                                       f"{owner[symbol]} and d2ldw.{module}.{part}")
    return owner


def _module_imports(module, blocks_by_target):
    """{name: import statement} of the top-level imports in every cell of ``module``'s parts:
    a part that uses a name another cell of the module imported gets that import too (the
    notebook cell leans on an import made earlier on the page or in the chapter)."""
    found = {}
    for target, blocks in blocks_by_target.items():
        if target.partition(".")[0] != module:
            continue
        for block in blocks:
            for node in ast.parse(block.code).body:
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        found.setdefault(alias.asname or alias.name.split(".")[0],
                                         ast.unparse(ast.Import(names=[alias])))
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    for alias in node.names:
                        found.setdefault(alias.asname or alias.name, ast.unparse(
                            ast.ImportFrom(module=node.module, names=[alias], level=0)))
    return found


def _render_module(target, blocks, core_owner, part_owner=None, module_imports=None):
    """The text of module or part ``target`` (``"torch.models"``). Names its code uses but
    does not define are imported in its header from the core module (or the earlier part
    of the same module, ``part_owner``) that defines them, or with the import another cell
    of the module made (``module_imports``)."""
    name, _, part = target.partition(".")
    spec = MODULES[name]
    parts = [p for p, _ in spec.parts]
    seen_imports = set()
    codes, notes = _drop_redefined(blocks)
    codes = [_drop_repeated_imports(code, seen_imports) for code in codes]
    kept = [i for i, code in enumerate(codes) if code]
    blocks, codes, notes = ([b[i] for i in kept] for b in (blocks, codes, notes))
    trees = [ast.parse(code) for code in codes]
    defined = set().union(*(_top_level_names(t) for t in trees))
    used = module_scope_reads("\n\n".join(codes))  # a function's own imports are local
    imported_here = {alias.asname or alias.name.split(".")[0] for tree in trees
                     for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                     for alias in node.names}
    needed, carried = {}, []
    for symbol in sorted(used - defined - set(dir(builtins))):
        if part and symbol in (module_imports or {}) and symbol not in imported_here:
            carried.append(module_imports[symbol])
            continue
        sibling = (part_owner or {}).get(symbol)
        if part and sibling and sibling != part:
            if parts.index(sibling) > parts.index(part):
                raise ExtractError(
                    f"d2ldw.{target} uses '{symbol}' from the later part d2ldw.{name}."
                    f"{sibling}; move the cell to a later part, or reorder the parts in "
                    f"d2ldw/_layout.py")
            needed.setdefault(f"{name}.{sibling}", []).append(symbol)
            continue
        source = core_owner.get(symbol)
        if source and source != name:
            if spec.core and list(LAYOUT.MODULES).index(source) > list(
                    LAYOUT.MODULES).index(name):
                raise ExtractError(f"d2ldw.{name} uses '{symbol}' from the later core module "
                                 f"d2ldw.{source}; move the cell or reorder MODULES")
            needed.setdefault(source, []).append(symbol)
    codes = [_drop_header_imports(code, needed) for code in codes]
    public = sorted(s for s in defined if not s.startswith("_"))
    doc = dict(spec.parts)[part] if part else spec.doc
    out = [f'"""{doc}\n\nGenerated by ``{COMMAND}`` from the ``#@save {target}`` '
           f"cells of the book's\nchapters. Do not edit: change the chapter and regenerate.\n"
           f'"""']
    if spec.requires and not part:  # a part is imported through its package's __init__
        import_name, pip_spec, extra = spec.requires
        out.append(f"from d2ldw._requires import require\n\nrequire({import_name!r}, "
                   f"{pip_spec!r}, module='d2ldw.{name}', extra={extra!r})")
    if carried:
        out.append("\n".join(sorted(set(carried), key=lambda line: (
            line.startswith("from"), line))))
    if needed:
        out.append("\n".join(f"from d2ldw.{source} import {', '.join(symbols)}"
                             for source, symbols in sorted(needed.items())))
    out.append("__all__ = [" + ", ".join(repr(s) for s in public) + "]")
    for block, code, replaced in zip(blocks, codes, notes):
        header = "".join(f"\n# ({note})" for note in replaced)
        out.append(f"\n# From {block.origin}{header}\n{code}")
    text = "\n\n".join(out) + "\n"
    return _prune_imports(text) if part else text


def _prune_imports(text):
    """``text`` without the imported names it never reads, and without a second import of
    a name: a cell imports what its page needs, and one part of a module needs only some of
    that. ``import a.b`` (imported for its effect on ``a``) is always kept."""
    reads = module_scope_reads(text)
    lines = text.splitlines()
    bound, edits = set(), []
    for node in ast.parse(text).body:
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        keep = []
        for alias in node.names:
            name = alias.asname or alias.name.split(".")[0]
            dotted = isinstance(node, ast.Import) and "." in alias.name and not alias.asname
            if dotted or (name in reads and name not in bound):
                keep.append(alias)
            bound.add(name)
        if len(keep) != len(node.names):
            edits.append((node, keep))
    for node, keep in reversed(edits):
        if keep and isinstance(node, ast.Import):
            kept = [ast.unparse(ast.Import(names=keep))]
        elif keep:
            kept = [ast.unparse(ast.ImportFrom(module=node.module, names=keep,
                                               level=node.level))]
        else:
            kept = []
        lines[node.lineno - 1:node.end_lineno] = kept
    return re.sub(r"\n{4,}", "\n\n\n", "\n".join(lines)).rstrip("\n") + "\n"


def _render_package(name, part_texts):
    """The ``__init__`` of a module split into parts: the framework check, then every
    public name of every part, in the order of the parts."""
    spec = MODULES[name]
    lines = [f"- ``d2ldw.{name}.{part}``: {doc}" for part, doc in spec.parts]
    out = [f'"""{spec.doc}\n\nIts parts, each a module of its own, in dependency order:\n\n'
           + "\n".join(lines) + "\n\nEvery public name of every part is importable from "
           f"``d2ldw.{name}``.\nGenerated by ``{COMMAND}``. Do not edit.\n" + '"""']
    if spec.requires:
        import_name, pip_spec, extra = spec.requires
        out.append(f"from d2ldw._requires import require\n\nrequire({import_name!r}, "
                   f"{pip_spec!r}, module='d2ldw.{name}', extra={extra!r})")
    exported = []
    imports = []
    for part, _ in spec.parts:
        public = _declared_all(part_texts[part], f"d2ldw.{name}.{part}")
        exported += public
        if public:
            imports.append(f"from d2ldw.{name}.{part} import (  # noqa: E402\n    "
                           + ",\n    ".join(public) + ",\n)")
    out.append("\n".join(imports))
    out.append("__all__ = [" + ", ".join(repr(s) for s in sorted(exported)) + "]")
    return "\n\n".join(out) + "\n"


def _declared_all(text, where):
    """The names a module's ``__all__ = [...]`` lists."""
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] \
                == ["__all__"]:
            return list(ast.literal_eval(node.value))
    raise ExtractError(f"{where} has no __all__ = [...]: list its public names")


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
    blocks_by_target = {target: [] for target in TARGETS}
    for number, notebook in book_order(root):
        for block in saved_blocks(number, notebook, root):
            blocks_by_target[block.module].append(block)
    empty = [name for name, blocks in blocks_by_target.items() if not blocks]
    if empty:
        raise ExtractError(f"no '#@save' cells for d2ldw module(s): {', '.join(empty)}")
    core_owner = _core_exports(blocks_by_target)
    texts = {}
    for name, spec in MODULES.items():
        if not spec.parts:
            path = LAYOUT.module_path(name, Path("d2ldw"))
            texts[path] = _render_module(name, blocks_by_target[name], core_owner)
            _check_module(name, path, texts[path])
            continue
        owners = _part_owners(name, blocks_by_target, root)
        imports = _module_imports(name, blocks_by_target)
        part_texts = {}
        for part, _ in spec.parts:
            if part in spec.written:
                part_texts[part] = _written_part(name, part, root)
                continue
            target = f"{name}.{part}"
            path = LAYOUT.part_path(name, part, Path("d2ldw"))
            texts[path] = part_texts[part] = _render_module(
                target, blocks_by_target[target], core_owner, owners, imports)
            _check_module(target, path, texts[path])
        path = LAYOUT.module_path(name, Path("d2ldw"))
        texts[path] = _render_package(name, part_texts)
        _check_module(name, path, texts[path])
    return texts


def _check_module(target, path, text):
    missing = undefined_names(text, str(path))
    if missing:
        raise ExtractError(
            f"{path} would use undefined name(s) {', '.join(missing)}: import "
            f"or define them in the '#@save {target}' cell that uses them")
    problems = LAYOUT.import_order_problems(target, text)
    if problems:
        raise ExtractError(f"{path}: {problems[0]}: move the code, or reorder "
                           f"d2ldw/_layout.py if the dependency is meant")


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
