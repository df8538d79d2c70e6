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


NAMESPACED = ("engines", "offline", "trainer")  # installed as usnst.engines, usnst.offline, usnst.trainer


def _design_name(module: str) -> str:
    """usnst.engines.registry → engines.registry: the name of the folder a module lives in."""
    parts = module.split(".")
    return ".".join(parts[1:]) if len(parts) > 1 and parts[0] == "usnst" and parts[1] in NAMESPACED else module


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {_design_name(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(_design_name(node.module))
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


def test_the_code_names_the_namespaced_packages_only_by_their_installed_names():
    """Installed, engines/offline/trainer are usnst.engines/… (issue 26, item 7): a bare `import engines` would
    work from the repository and fail (or find another distribution's package) once installed."""
    bare = []
    for path in [*ROOT.glob("*/**/*.py")]:
        if {".venv", ".ci-venv", "build"} & set(path.parts):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            bare += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in NAMESPACED]
    assert not bare, "\n".join(bare[:10])


def test_an_installed_usnst_adds_only_usnst_top_level_names(tmp_path):
    """The wheel `pip install .` installs holds no top-level name but usnst* (PyPI's `engines` and `trainer` would
    otherwise be overwritten by ours, or ours by them), and the shipped models and py.typed come with it."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "src"  # a copy: setuptools builds in the source tree, and the checkout stays as it is
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", ".ci-venv", "build", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", "data", "runs"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("usnst-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"usnst", "usnst_io", "usnst_stream"}, sorted(tops)
    assert "usnst/engines/default_models/lq2hq_fast.pt" in names and "usnst/py.typed" in names
    assert "usnst/engines/registry.py" in names and "usnst/offline/stylize.py" in names


def test_acoustic_facts_are_stated_once():
    """Issue 26 (6): tissue labels, the display range, Euler's γ and the echo level live in engines/acoustics.py;
    a literal of them elsewhere is a second place that can drift (50 dB defaults in eight places, while the phantom
    rendered 55)."""
    import re

    patterns = {
        "a display range default": re.compile(r"dynamic_range_db\s*:\s*float\s*=\s*\d"),
        "Euler's gamma": re.compile(r"0\.5772|np\.euler_gamma"),
        "the echo level": re.compile(r"ECHO_LEVEL\s*=|1\.0 / 255\.0\s*#.*echo"),
        "a label list": re.compile(r"(SPECKLE_LABELS|FETUS_LABELS)\s*=|\(40, 60, 120, 170, 180\)"),
    }
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "acoustics.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                found += [f"{path.relative_to(ROOT)}:{n}: {what}" for what, p in patterns.items() if p.search(line)]
    assert not found, "\n".join(found)
