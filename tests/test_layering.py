"""Dependencies point one way (README, Layout): usnst → usnst_stream, trainer → offline → engines → usnst_io; and inside
engines the base and the geometry sit below the backends. Read from the source, including imports inside functions."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("usnst", "usnst_stream", "trainer", "offline", "engines", "usnst_io")
# What each package may import (besides itself).
ALLOWED = {
    "usnst_io": set(),
    "engines": {"usnst_io"},
    "offline": {"engines", "usnst_io"},
    "trainer": {"offline", "engines", "usnst_io"},
    "usnst_stream": {"engines", "usnst_io"},
    "usnst": {"usnst_stream", "trainer", "offline", "engines", "usnst_io"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_packages_import_only_downwards():
    wrong = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for name in _imports(path):
                top = name.split(".")[0]
                if top in PACKAGES and top != package and top not in ALLOWED[package]:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_engine_base_and_geometry_import_no_backend():
    backends = {"engines.body_engine", "engines.onnx_backend", "engines.tensorrt_backend", "engines.registry"}
    for module in ("base", "geometry", "checkpoint", "transformer_net", "fast_net"):
        assert not _imports(ROOT / "engines" / f"{module}.py") & backends, module
    for module in ("body_engine", "onnx_backend", "tensorrt_backend"):
        assert "engines.registry" not in _imports(ROOT / "engines" / f"{module}.py"), module
