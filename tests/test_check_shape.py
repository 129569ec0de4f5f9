"""scripts/check_shape.py: the rules `make lint` keeps (issue 28) hold on the repo, and the
checker finds each kind of breach."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_shape", ROOT / "scripts" / "check_shape.py")
shape = importlib.util.module_from_spec(_spec)
sys.modules["check_shape"] = shape
_spec.loader.exec_module(shape)


def test_the_repo_keeps_the_rules(capsys):
    assert shape.main([]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    assert "0 problem(s)" in out.err


def test_a_function_over_80_code_lines_is_found_and_docstrings_comments_blanks_do_not_count(
    tmp_path,
):
    body = "\n".join(f"    x{i} = {i}  # c" for i in range(81))
    doc = '    """' + "\n" * 30 + '    """\n'
    ok = "\n".join(f"    y{i} = {i}\n    # only a comment\n" for i in range(80))
    (tmp_path / "m.py").write_text(f"def long():\n{body}\n\n\ndef fine():\n{doc}{ok}\n")
    found = shape.long_functions(tmp_path / "m.py")
    assert [(name.rpartition(":")[2], n) for name, n in found] == [("long", 81)]


def test_a_cycle_and_imports_against_the_layers_are_found():
    graph = {
        "featstore.embed": {"featstore.gpudecode"},
        "featstore.gpudecode": {"featstore.embed"},
        "featstore.config": {"featstore.train.grid"},  # layer 1 -> layer 3
        "featstore.report.tables": {"featstore.reduce"},  # a peer of the stages -> a stage
        "featstore.train.grid": {"featstore.train.cells", "featstore.store"},  # same group, lower
        "featstore.study": {"featstore.extract"},  # higher -> lower
        "featstore.newthing": set(),
    }
    assert shape.cycles(graph) == [["featstore.embed", "featstore.gpudecode"]]
    problems = shape.layer_problems(graph)
    assert problems == [
        "featstore.config (config, layer 1) imports featstore.train.grid (train, layer 3)",
        "featstore.newthing: not in scripts/check_shape.py's LAYERS",
        "featstore.report.tables (report, layer 3) imports featstore.reduce (reduce, layer 3)",
    ]
