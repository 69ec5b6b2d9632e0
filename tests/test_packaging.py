"""The wheel: build it, check its contents, install it and import from the install.

The build runs on a copy of the source tree, so it never writes ``build/`` or
``*.egg-info`` into the working copy. The installed package is imported in a
fresh interpreter started without ``site`` (so the editable install of this
checkout cannot answer the import), with ``PYTHONPATH`` set to the install
target plus this environment's site-packages for the dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("retail_events.csv.gz", "retail_spec.json", "wholesale_customers.csv",
            "online_shoppers.csv.gz")
SKIP_TOP_LEVEL = {"tests", "build", "dist", "benchmarks", "models"}


def copy_source(dest: Path) -> Path:
    """The project as the build backend sees it, minus caches, VCS and tests."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == ROOT
        return {n for n in names
                if n == "__pycache__" or n.endswith(".egg-info")
                or (top and (n.startswith(".") or n in SKIP_TOP_LEVEL))}

    return Path(shutil.copytree(ROOT, dest, ignore=ignore))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = copy_source(work / "src")
    out = work / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "--disable-pip-version-check", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("edgepersona-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("target")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def run_installed(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -S args`` seeing only the install target and the dependencies."""
    deps = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), *deps])
    return subprocess.run([sys.executable, "-S", *args], cwd=target.parent, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_wheel_ships_type_markers_datasets_and_the_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
        metadata = next(archive.read(n).decode() for n in names
                        if n.endswith(".dist-info/METADATA"))
    assert "edgepersona/sdk/py.typed" in names
    assert "edgepersona/trainer/py.typed" in names
    for dataset in DATASETS:
        assert f"edgepersona/trainer/datasets/{dataset}" in names
    assert "edgepersona/trainer/cli/__init__.py" in names
    assert "edgepersona = edgepersona.trainer.cli:main" in entry_points
    # `edgepersona` is a namespace shared by the two halves: no top-level __init__.
    assert "edgepersona/__init__.py" not in names
    assert not any(n.startswith(("tests/", "sdk/", "trainer/")) for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # The base install is the SDK: nothing heavy without an extra.
    base = [line for line in metadata.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not any(heavy in line for line in base
                   for heavy in ("scikit-learn", "scipy", "pandas", "skl2onnx", "onnx>"))


def test_installed_wheel_imports_from_the_target_not_the_source(installed: Path) -> None:
    code = (
        "import edgepersona.sdk, edgepersona.trainer.cli, edgepersona.trainer.datasets\n"
        "from importlib import resources\n"
        "spec = resources.files('edgepersona.trainer.datasets').joinpath('retail_spec.json')\n"
        "loaded = edgepersona.sdk.load_spec_json(spec.read_text(encoding='utf-8'))\n"
        "print(edgepersona.sdk.__file__)\n"
        "print(edgepersona.trainer.cli.__file__)\n"
        "print(len(loaded.features))\n"
    )
    done = run_installed(installed, "-c", code)
    assert done.returncode == 0, done.stderr
    sdk_file, cli_file, n_features = done.stdout.split()
    target = installed.resolve()
    assert Path(sdk_file).resolve().is_relative_to(target), sdk_file
    assert Path(cli_file).resolve().is_relative_to(target), cli_file
    assert not Path(sdk_file).resolve().is_relative_to(ROOT)
    assert int(n_features) > 0
    assert (installed / "edgepersona" / "sdk" / "py.typed").is_file()
    assert (installed / "edgepersona" / "trainer" / "py.typed").is_file()


def test_installed_command_line_runs(installed: Path) -> None:
    done = run_installed(installed, "-m", "edgepersona.trainer.cli", "--help")
    assert done.returncode == 0, done.stderr
    assert "quickstart" in done.stdout


def test_without_the_install_target_nothing_is_importable(installed: Path) -> None:
    # Guards the import test: without the target on the path, the import must fail,
    # so a pass above cannot come from the editable install of this checkout.
    deps = os.pathsep.join(dict.fromkeys([sysconfig.get_path("purelib"),
                                          sysconfig.get_path("platlib")]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = deps
    done = subprocess.run([sys.executable, "-S", "-c", "import edgepersona.sdk"],
                          cwd=installed.parent, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr
