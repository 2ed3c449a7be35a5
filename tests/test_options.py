"""The analysis options are declared once (embedgeom.options.AnalysisOptions): the CLI's options are checked against
the declaration (same parameters, help text and defaults), analyze / analyze_checkpoints / compare take them as
keywords or as one object, and every saved result records all of them."""

from __future__ import annotations

import ast
import pathlib

import click
import pytest
import typer

import embedgeom as eg
from embedgeom import metrics as M
from embedgeom.cli import app
from embedgeom.options import DEFAULT_DATA, AnalysisOptions

#: Parameters of the commands that are about the command itself, not about what an analysis measures.
COMMAND_ONLY = {"analyze": {"checkpoint", "out", "fmt", "no_cache", "cache_dir", "name", "checkpoints", "verbose",
                            "quiet", "threads", "embeddings", "embeddings_key", "labels", "pairs", "scores"},
                "compare": {"models", "poolings", "group_a", "group_b", "out", "fmt", "significant", "no_cache",
                            "cache_dir", "verbose", "quiet", "threads", "correction"}}


def _command(name: str) -> click.Command:
    group = typer.main.get_command(app)
    return group.commands[name]


@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_cli_options_are_the_declared_options(command):
    params = {p.name: p for p in _command(command).params}
    cli = AnalysisOptions.cli_names()
    declared = {c for c in cli.values() if c in params}
    assert set(params) - COMMAND_ONLY[command] == declared  # nothing on the CLI that the declaration lacks
    if command == "analyze":
        assert declared == set(cli.values())  # every declared CLI option is on analyze
    defaults = AnalysisOptions()
    for name, c in cli.items():
        if c not in params:
            continue
        p = params[c]
        assert p.help == AnalysisOptions.help(name), name
        got = p.default.value if hasattr(p.default, "value") else p.default
        want = {"data": ",".join(DEFAULT_DATA), "poolings": "all", "layers": "-1"}.get(name, getattr(defaults, name))
        assert got == want, name


def test_one_default_for_python_and_the_cli():
    assert AnalysisOptions().data == DEFAULT_DATA == ("sample:bbc", "sample:lee")
    assert AnalysisOptions.create().metrics == M.names("set")
    assert AnalysisOptions().groups == M.uncertainty.DEFAULT_GROUPS


@pytest.mark.parametrize(("values", "match"), [
    ({"max_textz": 3}, r"^max_textz: not an analysis option; expected some of data, poolings"),
    ({"poolings": "mean,avg"}, r"^poolings: expected names from mean, cls, max, attention, native or 'all', got 'avg'"),
    ({"confidence": 1.5}, r"^confidence: expected a level strictly between 0 and 1"),
    ({"cache": 3}, r"^cache: expected True, False or a cache directory"),
    ({"metrics": ("linear_cka",)}, r"^metrics: expected single-set metrics"),
])
def test_create_refuses_bad_values_in_one_line(values, match):
    with pytest.raises(ValueError, match=match) as err:
        AnalysisOptions.create(**values)
    assert "\n" not in str(err.value)


def test_all_means_the_four_parameter_free_poolings():
    assert AnalysisOptions.create(poolings="all").poolings == ("mean", "cls", "max", "attention")
    assert AnalysisOptions.create(poolings="max,mean,max").poolings == ("max", "mean")


def test_keywords_and_an_options_object_give_the_same_result(tiny_bert_dir):
    kw = {"data": "sample:polarity", "max_texts": 20, "poolings": "mean", "probes": False, "cache": False,
          "device": "cpu", "dtype": "float32"}
    a = eg.analyze(tiny_bert_dir, **kw)
    opts = AnalysisOptions.create(**{k: v for k, v in kw.items() if k != "max_texts"})
    b = eg.analyze(tiny_bert_dir, options=opts, max_texts=20)  # keywords override the object
    assert [r["value"] for r in a.metrics] == [r["value"] for r in b.metrics]
    recorded = {k: a.options[k] for k in AnalysisOptions.names()}
    assert recorded == AnalysisOptions.create(**kw).record()  # every option is recorded, as declared
    with pytest.raises(ValueError, match="options: expected an AnalysisOptions"):
        eg.analyze(tiny_bert_dir, options={"max_texts": 3})


def test_no_import_cycle_inside_embedgeom():
    """Module-level imports inside the package form a DAG (lazy imports inside functions are allowed)."""
    root = pathlib.Path(eg.__file__).parent
    mods = {".".join(f.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): f
            for f in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, f in mods.items():
        pkg = name if f.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom):
                base = pkg
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                target = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                cands = subs if len(subs) == len(node.names) else [target, *subs]
            elif isinstance(node, ast.Import):
                cands = [a.name for a in node.names]
            else:
                continue
            deps |= {c for c in cands if c in mods and c not in (name, "embedgeom")}
        graph[name] = deps
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycles.append([*path[path.index(d):], d] if d in path else [n, d])
            elif d not in state:
                visit(d, [*path, d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles)


def test_the_readme_layout_names_every_module():
    root = pathlib.Path(eg.__file__).parent
    readme = (root.parent / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("\n## ")] if "\n## " in layout else layout
    missing = [p.name for p in sorted(root.glob("*.py")) if p.name != "__init__.py" and p.name not in layout]
    assert missing == [], f"README Layout does not mention {missing}"
