"""One direction of dependency per concept: every import (also inside functions) goes to a lower layer.

The layers are those of docs/INTERFACES.md. A change that makes, say, ``inference`` import
``training`` or the pipeline call the command line fails here, naming the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "disdiff"
#: Lower numbers are lower layers; a package may import its own modules and lower layers only.
LAYERS = {"config": 0, "utils": 1, "data": 2, "diffusion": 2, "metrics": 3, "models": 3, "evaluation": 4,
          "inference": 4, "training": 5, "api": 6, "pipeline": 7, "interop": 7, "cli": 8, "__main__": 9}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("disdiff"):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("disdiff")]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_imports_go_down_the_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        assert own in LAYERS, f"{relative}: add its layer to LAYERS (and to docs/INTERFACES.md)"
        for line, module in _imports(path):
            target = _layer(module)
            if target is None or target == own:
                continue
            if LAYERS[target] >= LAYERS[own]:
                wrong.append(f"{relative}:{line} imports {module} ({own} may not use {target})")
    assert not wrong, "\n".join(wrong)


def test_the_quickstart_report_does_not_import_the_quickstart():
    report = PACKAGE / "pipeline" / "quickstart_report.py"
    assert not [m for _, m in _imports(report) if m == "disdiff.pipeline.quickstart"]
