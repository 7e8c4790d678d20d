"""The three floors: the data floor (`imagenet52p`) and the library (`pruning`) import nothing from the floors
above them, nor from each other, anywhere (module level or inside functions); `import pruning` loads neither
the data floor nor PIL/torchvision/torch_pruning, and importing the data floor loads neither `pruning` nor
`benchmark` (both checked in a fresh interpreter)."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("imagenet52p", "benchmark", "PIL", "torchvision", "torch_pruning")
#: What each floor may not import, anywhere in it.
FORBIDDEN = {"imagenet52p": {"pruning", "benchmark"}, "pruning": {"imagenet52p", "benchmark"}}


def _loaded(modules, watch) -> list:
    code = (f"import json, sys; import {', '.join(modules)}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(watch)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("module", ["pruning", "pruning.loop", "pruning.loop.engine"])
def test_importing_the_library_loads_no_other_floor_and_no_pil(module):
    assert _loaded([module], HEAVY) == [], f"import {module} loads other floors or PIL/torchvision"


def test_importing_the_data_floor_loads_neither_the_library_nor_the_application():
    modules = sorted({"imagenet52p." + ".".join(p.relative_to(ROOT / "imagenet52p").with_suffix("").parts)
                      for p in (ROOT / "imagenet52p").rglob("*.py") if p.name != "__init__.py"} |
                     {"imagenet52p", "imagenet52p.builder", "imagenet52p.format"})
    modules = [m for m in modules if m != "imagenet52p.build"]  # the deprecated shim warns; checked on its own
    assert _loaded(modules, ("pruning", "benchmark")) == []
    assert _loaded(["imagenet52p.build"], ("pruning", "benchmark")) == []


def imports_of(path: Path) -> set:
    """Top-level package names a file imports, at module level or inside functions (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value.split(".")[0])
    return names


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_no_module_of_a_floor_imports_a_floor_it_may_not(floor):
    bad = {str(p.relative_to(ROOT)): sorted(imports_of(p) & FORBIDDEN[floor])
           for p in (ROOT / floor).rglob("*.py") if imports_of(p) & FORBIDDEN[floor]}
    assert bad == {}


def test_the_import_checker_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from benchmark.run import run_spec\n    import importlib\n"
                 "    importlib.import_module('pruning.loop')\n")
    assert imports_of(f) >= {"benchmark", "pruning"}
