"""The code's shape, checked by ``make lint``: no function over 80 code lines, no module over
800 lines, no import cycle, no import from a lower layer to a higher one (issue 28).

Code lines = lines of a function's body that are not blank, not comments and not docstrings.
``python scripts/check_shape.py --report`` prints the numbers without failing.
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION = 80
MAX_MODULE = 800
PACKAGES = ("featstore", "jobs")


def _code_lines(source: str) -> set[int]:
    """Line numbers holding code: not blank, not only a comment, not a docstring."""
    tree = ast.parse(source)
    doc: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                doc.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (
            tokenize.COMMENT,
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            continue
        for n in range(tok.start[0], tok.end[0] + 1):
            lines.add(n)
    return lines - doc


#: The layers, lowest first: a module imports only its own layer or lower ones, and the peers of
#: the "stage" layer (every stage and the report) never import one another: a stage reads what
#: another wrote through the store, and the report reads the store, never a stage's code.
#: Each entry: (layer, group, module prefixes); a module belongs to its longest prefix.
LAYERS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        0,
        "base",
        (
            "featstore",
            "featstore.errors",
            "featstore.quiet",
            "featstore.timing",
            "featstore.fsio",
            "featstore.progress",
            "featstore.spread",
            "featstore.causes",
            "featstore.forward",
            "featstore.shmring",
            "featstore.decode",
        ),
    ),
    (1, "config", ("featstore.config",)),
    (1, "registry", ("featstore.modelspecs",)),
    (1, "sources", ("featstore.sources",)),
    (1, "store", ("featstore.store",)),
    (
        2,
        "library",
        (
            "featstore.models",
            "featstore.embed",
            "featstore.decodepool",
            "featstore.gpudecode",
            "featstore.udf",
            "featstore.feed",
            "featstore.migrate",
            "featstore.evaluate",
            "featstore.multiclass",
            "featstore.train",
            "featstore.comparison",
        ),
    ),
    (3, "ingest", ("featstore.ingest",)),
    (3, "extract", ("featstore.extract",)),
    (3, "reduce", ("featstore.reduce",)),
    (3, "retrieve", ("featstore.retrieval",)),
    (3, "train", ("featstore.train.grid", "featstore.train.cells")),
    (3, "report", ("featstore.report",)),
    (4, "study", ("featstore.study", "featstore.compare")),
    (5, "jobs", ("jobs",)),
)
PEER_LAYER = 3


def layer_of(module: str) -> tuple[int, str] | None:
    best: tuple[int, int, str] | None = None
    for layer, group, prefixes in LAYERS:
        for pre in prefixes:
            # "featstore" names the package's __init__ only, not everything under it
            if module == pre or (pre != "featstore" and module.startswith(pre + ".")):
                if best is None or len(pre) > best[0]:
                    best = (len(pre), layer, group)
    return None if best is None else (best[1], best[2])


def layer_problems(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, deps in sorted(graph.items()):
        me = layer_of(mod)
        if me is None:
            out.append(f"{mod}: not in scripts/check_shape.py's LAYERS")
            continue
        for dep in sorted(deps):
            it = layer_of(dep)
            if it is None or it[1] == me[1]:
                continue
            if it[0] > me[0] or (it[0] == me[0] == PEER_LAYER):
                out.append(f"{mod} ({me[1]}, layer {me[0]}) imports {dep} ({it[1]}, layer {it[0]})")
    return out


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def module_name(path: Path) -> str:
    rel = (path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path(path.name)).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def long_functions(path: Path) -> list[tuple[str, int]]:
    source = path.read_text()
    code = _code_lines(source)
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0].lineno
            n = sum(1 for line in range(first, node.end_lineno + 1) if line in code)
            if n > MAX_FUNCTION:
                out.append((f"{module_name(path)}:{node.name}", n))
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """First-party modules ``path`` imports at module level or in functions (not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def add(name: str) -> None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != me:
            out.add(name)

    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for n in ast.walk(sub):
                    skip.add(id(n))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".") if is_pkg else me.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                add(full if full in known else mod)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="print the numbers, never fail")
    args = ap.parse_args(argv)
    paths = modules()
    known = {module_name(p) for p in paths}
    problems: list[str] = []
    for p in paths:
        n = len(p.read_text().splitlines())
        if n > MAX_MODULE:
            problems.append(f"{p.relative_to(ROOT)}: {n} lines (at most {MAX_MODULE})")
        for name, lines in long_functions(p):
            problems.append(f"{name}: {lines} code lines (at most {MAX_FUNCTION})")
    # Package __init__ modules that only re-export are not edges of the layer graph: a
    # submodule imports its siblings, not the package's public face.
    graph = {module_name(p): imports(p, known) for p in paths}
    graph = {m: {d for d in deps if not (m.startswith(d + "."))} for m, deps in graph.items()}
    for comp in cycles(graph):
        problems.append("import cycle: " + " -> ".join(comp))
    problems += layer_problems(graph)
    for p in problems:
        print(p)
    print(f"{len(paths)} modules, {len(problems)} problem(s)", file=sys.stderr)
    return 0 if args.report or not problems else 1


if __name__ == "__main__":
    sys.exit(main())
