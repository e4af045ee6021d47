"""The core's modules import each other without circles, at top level or inside functions.

A circle held together by an import inside a function hides which module
owns a piece; each shared piece lives where both sides can import it.
"""

import ast
from pathlib import Path

import napari_unet

PACKAGE = Path(napari_unet.__file__).parent


FACES = ("cli", "_napari")  # the thin shells: the core never imports them


def dotted(path: Path) -> str:
    """``path``'s module name below the package, e.g. "segmenting.sizes"."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def relative_imports(path: Path) -> set[str]:
    """The package's modules ``path`` imports (``from .x import ...``, ``from ..y.z import``,
    anywhere in it), as dotted names below the package."""
    package = (
        dotted(path).split(".") if path.name == "__init__.py" else dotted(path).split(".")[:-1]
    )
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = [*base, *(node.module.split(".") if node.module else [])]
            # ``from . import x`` may name a module: count it when it is one.
            names = [".".join([*target, a.name]) for a in node.names]
            found.update([".".join(target), *names])
    return found


def core_graph() -> dict[str, set[str]]:
    modules = {
        dotted(p): p
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).parts[0] not in FACES and dotted(p)
    }
    return {name: relative_imports(path) & set(modules) - {name} for name, path in modules.items()}


# The subpackages in the order the data flows: each imports only those before it
# (and the package's own top-level modules: errors, progress, devices, heap).
LAYERS = ("images", "labels", "models", "segmenting", "training")


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0]) + 1 if "." in module else 0


def test_each_subpackage_imports_only_those_before_it():
    graph = core_graph()
    assert {m.split(".")[0] for m in graph if "." in m} == set(LAYERS)
    backwards = [f"{m} -> {d}" for m, deps in graph.items() for d in deps if layer(d) > layer(m)]
    assert backwards == []


def test_the_graph_sees_the_subpackages():
    graph = core_graph()
    assert "models.sizes" in graph["segmenting.segmentation"]
    assert "models.modelfile" in graph["segmenting.segmentation"]
    assert "errors" in graph["images.io"]


def test_the_core_never_imports_its_faces():
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] in FACES or path == PACKAGE / "__init__.py":
            continue
        faces = {m for m in relative_imports(path) if m.split(".")[0] in FACES}
        assert not faces, f"{dotted(path)} imports {faces}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circles_in_the_core():
    assert find_cycle(core_graph()) is None, " -> ".join(find_cycle(core_graph()))


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
