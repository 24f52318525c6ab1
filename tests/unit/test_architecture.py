"""The package's shape: serving knows no clock, imports have no cycles, modules stay small, and
the one model description means the same model on both clocks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "pdlab"


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """pdlab modules ``path`` imports, at any depth of the file (lazy imports count too)."""
    mod = _module(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):      # imports only type checkers see are not a runtime dependency
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("pdlab"):
                out.add(name)
                out.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("pdlab"))
    return out


MODULES = {_module(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


GRAPH = {m: {r for r in map(_resolve, _imports(p)) if r and r != m} for m, p in MODULES.items()}


def test_serving_imports_neither_clock():
    for m, deps in GRAPH.items():
        if m.startswith("pdlab.serving"):
            bad = {d for d in deps if d.startswith(("pdlab.sim", "pdlab.engine", "pdlab.kernels", "pdlab.run"))}
            assert not bad, f"{m} imports {bad}: serving must not know what a step costs"


def test_no_import_cycles():
    # package __init__ files re-export their own modules; an edge into a package means its init
    edges = {m: {d for d in deps if not (m.startswith(d + ".") and MODULES[d].name == "__init__.py")}
             for m, deps in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in edges.get(m, ()):
            if state.get(d) == 1:
                cycle = path[path.index(d):] + [d] if d in path else [m, d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if not state.get(d):
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(edges):
        if not state.get(m):
            visit(m, [m])


def test_modules_stay_small():
    # a kernel whose body is one long function may be longer (its own file says why)
    long_ok = {"pdlab.kernels.decode_kernel"}
    for m, p in MODULES.items():
        n = len(p.read_text().splitlines())
        assert n <= 420 or m in long_ok, f"{m} has {n} lines: split it by what its parts do"


def test_engine_config_is_the_cost_models_model():
    torch = pytest.importorskip("torch")  # noqa: F841
    from pdlab.engine import model as M
    from pdlab.models import MODELS
    for name, cfg in M.PRESETS.items():
        spec = cfg.spec()
        full = MODELS[name]
        assert (spec.hidden, spec.heads, spec.kv_heads, spec.ffn, spec.vocab, spec.dtype, spec.kv_dtype) == \
               (full.hidden, full.heads, full.kv_heads, full.ffn, full.vocab, full.dtype, full.kv_dtype), name
        assert spec.layers == full.layers or spec.full_layers == full.layers, name
        assert M.ModelConfig.from_spec(spec) == cfg or name == "tiny", name     # tiny is also marked trained


def test_engine_mode_moves_the_engines_kv_bytes():
    """In engine mode the KV link carries what the engine's cache holds per token, not what the
    full-depth model would: llama-3-8b runs 4 of its 32 layers there."""
    torch = pytest.importorskip("torch")
    from pdlab import ServingConfig, run_serving
    from pdlab.engine import model as M
    from pdlab.engine.executor import ModelExecutor
    from pdlab.request import Request

    torch.set_num_threads(1)
    cfg = M.preset("llama-3-8b", hidden_size=256, num_heads=2, num_kv_heads=2, ffn_size=256, vocab_size=300,
                   dtype="float32")
    model = M.Model(cfg).init_random(0)
    execs = []

    def make(name, role, nb, bs):
        execs.append(ModelExecutor(model, nb, bs, device="cpu"))
        return execs[-1]

    reqs = [Request(0, 0.0, 40, 3, tuple(range(40)))]
    res = run_serving(reqs, ServingConfig(mode="disaggregated", model="llama-3-8b", num_blocks=32), make)
    ex = execs[0]
    per_token = ex.kv_cache_bytes // (ex.num_blocks * ex.block_size)
    assert per_token == ex.kv_bytes_per_token == cfg.spec().kv_bytes_per_token
    assert res.kv_bytes_moved == 40 * per_token
    assert per_token == 2 * 4 * 2 * 128 * 2          # K and V x 4 layers x 2 KV heads x head dim 128 x bf16
    assert cfg.num_layers == 4 and cfg.extra["full_num_layers"] == 32
