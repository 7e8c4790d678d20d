"""The floors: the library (`pruning`) and the data floor (`imagenet52p`) import nothing above them, and
`import pruning` loads neither the data floor nor PIL/torchvision (checked in a fresh interpreter)."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("imagenet52p", "benchmark", "PIL", "torchvision", "torch_pruning")


@pytest.mark.parametrize("module", ["pruning", "pruning.loop", "pruning.loop.engine"])
def test_importing_the_library_loads_no_other_floor_and_no_pil(module):
    code = (f"import json, sys; import {module}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout) == [], f"import {module} loads {out.stdout.strip()}"


def _module_level_imports(path: Path) -> set:
    """Top-level package names a file imports at module level (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("floor,forbidden", [("pruning", {"imagenet52p", "benchmark"}), ("imagenet52p", {"benchmark"})])
def test_no_module_of_a_lower_floor_imports_a_higher_one_at_import_time(floor, forbidden):
    bad = {str(p.relative_to(ROOT)): sorted(_module_level_imports(p) & forbidden)
           for p in (ROOT / floor).rglob("*.py") if _module_level_imports(p) & forbidden}
    assert bad == {}
