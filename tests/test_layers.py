"""The package's layers (docs/architecture.md): a module imports only its own layer or those below.

Imports are read from the source (``ast``), lazy ones inside functions included, so an upward arrow
or an import circle through the command layer cannot come back unnoticed.
"""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ltbench"

# top to bottom; a module's layer is that of its longest matching prefix
LAYERS = [
    ["ltbench.cli", "ltbench.commands"],
    ["ltbench.leaderboard"],
    ["ltbench.suite"],
    ["ltbench.runner", "ltbench.config_errors", "ltbench.run_log"],
    ["ltbench.methods"],
    ["ltbench.data", "ltbench.models"],
    ["ltbench.losses", "ltbench.metrics", "ltbench.records", "ltbench.references", "ltbench.errors", "ltbench.lazy",
     "ltbench.network", "ltbench.checkpoints", "ltbench.rundirs", "ltbench"],
]


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_name(p) for p in PACKAGE.rglob("*.py"))


def _layer(module: str) -> int:
    matches = [(len(prefix), i) for i, layer in enumerate(LAYERS) for prefix in layer if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} belongs to no layer; add it to LAYERS (and docs/architecture.md)"
    return max(matches)[1]


def _imports(module: str) -> set[str]:
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{module}: relative import; the house style imports ltbench modules absolutely")
    return {m for m in out if m == "ltbench" or m.startswith("ltbench.")}


def test_every_module_is_in_a_layer():
    assert "ltbench.cli" in MODULES and "ltbench.commands.leaderboard" in MODULES
    for m in MODULES:
        _layer(m)


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_a_higher_layer(module):
    upward = [m for m in _imports(module) if _layer(m) < _layer(module)]
    assert not upward, f"{module} (layer {_layer(module)}) imports {upward} from a higher layer"


def test_the_layer_check_sees_lazy_imports(tmp_path, monkeypatch):
    """The rule would catch the circle this package once had (suite importing the CLI in a function)."""
    fake = tmp_path / "ltbench"
    fake.mkdir()
    (fake / "suite.py").write_text("def f():\n    from ltbench.cli import run\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _imports("ltbench.suite") == {"ltbench.cli"}
    assert _layer("ltbench.cli") < _layer("ltbench.suite")


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module):
    importlib.import_module(module)


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    return set(out.stdout.split())


def test_command_layer_loads_no_torch_before_a_subcommand_needs_it():
    """``ltbench --help`` and ``ltbench leaderboard --help`` must stay fast: no torch, lightning or W&B."""
    for statement in ("import ltbench.cli", "import ltbench.commands.leaderboard", "import ltbench.commands.tde_alpha_sweep"):
        heavy = {m for m in _loaded_after(statement) if m.split(".")[0] in ("torch", "lightning", "wandb", "open_clip", "sklearn", "timm")}
        assert not heavy, f"`{statement}` loads {sorted(heavy)[:5]}"


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "ltbench.cli", "--help"], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.returncode == 0
    for name in ("fit", "validate", "test", "predict", "leaderboard", "tde-alpha-sweep"):
        assert f"\n  {name} " in out.stdout, name
    bare = subprocess.run([sys.executable, "-m", "ltbench.cli"], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert bare.returncode == 2 and "leaderboard" in bare.stderr
    typo = subprocess.run([sys.executable, "-m", "ltbench.cli", "leaderbord"], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert typo.returncode == 2 and "unknown subcommand 'leaderbord'" in typo.stderr and "tde-alpha-sweep" in typo.stderr
    board = subprocess.run([sys.executable, "-m", "ltbench.cli", "leaderboard", "--help"], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert board.returncode == 0 and "--render-only" in board.stdout


def test_running_a_config_imports_wandb_only_when_it_is_used():
    """timm imports W&B eagerly; ltbench imports timm without it (ltbench.lazy), and W&B still loads when used."""
    code = (
        "import sys, ltbench.runner; "
        "assert 'wandb.sdk' not in sys.modules, 'wandb was loaded'; "
        "import wandb; from wandb.sdk.lib import RunDisabled; "
        "print(wandb.__version__, 'wandb.sdk' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    version, loaded = out.stdout.split()
    assert version[0].isdigit() and loaded == "True"
