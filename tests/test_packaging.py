"""The installed package's metadata: disdiff installs beside any newer torch (issue 14)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _install_without_dependencies(tmp_path: Path) -> Path:
    """``pip install --no-deps --target`` a copy of the project; returns the installed METADATA file.

    A copy, so that setuptools' build folders are not left in the working tree; no build isolation
    and no index, so that nothing is downloaded (setuptools of the running environment builds it).
    """
    source = tmp_path / "src_copy"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    target = tmp_path / "target"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, capture_output=True, text=True)
    found = list(target.glob("disdiff-*.dist-info/METADATA"))
    assert len(found) == 1, f"expected one disdiff dist-info in {target}, found {found}"
    return found[0]


def test_installed_metadata_puts_no_upper_bound_on_torch(tmp_path):
    metadata = Parser().parsestr(_install_without_dependencies(tmp_path).read_text())
    requirements = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    torch = [r for r in requirements if r.name == "torch" and r.marker is None]
    assert len(torch) == 1, f"expected one unconditional torch requirement, got {requirements}"
    spec = torch[0].specifier
    # Nothing that excludes a newer release: only lower bounds.
    assert all(s.operator in (">=", ">") for s in spec), f"torch requirement {spec} has an upper bound or a pin"
    for newer in ("2.13.0", "2.14.0", "3.0.0", "99.1"):
        assert spec.contains(Version(newer)), f"torch {newer} is not admitted by {spec}"
    # ... but a floor the code needs (scaled_dot_product_attention(scale=...) is torch 2.1 API).
    assert not spec.contains(Version("2.0.1"))
    # The package data that the quickstart needs is installed with it.
    installed = tmp_path / "target" / "disdiff"
    assert (installed / "configs" / "quickstart" / "disdiff-run.yaml").is_file()
    # ... and so are the packaged stage-1/2 checkpoints with their README and logs, whatever is shipped.
    shipped = sorted(p.relative_to(ROOT / "src" / "disdiff") for p in (ROOT / "src" / "disdiff" / "pretrained").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    assert all((installed / path).is_file() for path in shipped), [p for p in shipped if not (installed / p).is_file()]
