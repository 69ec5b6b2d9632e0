"""The device SDK stays light, and works on devices without onnxruntime.

Both checks run in a fresh interpreter, because this test process has long
since imported the trainer and its heavy dependencies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgepersona.sdk import PersonaRuntime

HEAVY = ("sklearn", "scipy", "pandas", "skl2onnx", "onnx", "dask", "fastapi", "pyarrow")


def run_python(code: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    """Run code in a fresh interpreter (warnings are errors) and return its JSON output."""
    done = subprocess.run([sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def heavy_modules_after(code: str, cwd: Path) -> list[str]:
    return run_python(textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        heavy = {HEAVY!r}
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
        """), cwd)


def test_importing_the_sdk_pulls_in_nothing_heavy(tmp_path: Path) -> None:
    assert heavy_modules_after("import edgepersona.sdk\n", tmp_path) == []


def test_opening_a_bundle_and_assigning_pulls_in_nothing_heavy(
        tmp_path: Path, bundle_dir: Path, public_key: bytes) -> None:
    code = f"""
        from edgepersona.sdk import PersonaRuntime
        runtime = PersonaRuntime.open({str(bundle_dir)!r}, trusted_keys=[{public_key!r}])
        assert runtime.backend == "onnxruntime", runtime.backend
        runtime.assign([1.0] * len(runtime.spec.features))
        """
    assert heavy_modules_after(code, tmp_path) == []


def test_opening_a_bundle_and_assigning_does_not_import_pydantic(
        tmp_path: Path, bundle_dir: Path, public_key: bytes) -> None:
    # The device reads the verified manifest with json alone; the pydantic models are
    # built only when the app asks for the full manifest (which proves the check can fail).
    code = f"""
        import json, sys
        from edgepersona.sdk import PersonaRuntime
        runtime = PersonaRuntime.open({str(bundle_dir)!r}, trusted_keys=[{public_key!r}])
        runtime.assign([1.0] * len(runtime.fold_plan.spec.features))
        before = sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core"))
        lazy = sorted(m for m in sys.modules if m.rsplit(".", 1)[-1] in ("rotation", "sqlite3"))
        runtime.manifest.model_dump_json()
        print(json.dumps([before, lazy, "pydantic" in sys.modules]))
        """
    before, lazy, after = run_python(code, tmp_path)
    assert before == []
    assert lazy == []
    assert after


def test_tracking_assigning_and_contributing_do_not_import_pydantic(
        tmp_path: Path, bundle_dir: Path, public_key: bytes) -> None:
    # The app's whole device loop (client, track, assign, seal a contribution) stays on
    # the light manifest reading too: pydantic would cost a first contribution ~100 ms.
    code = f"""
        import json, sys
        from pathlib import Path
        from edgepersona.sdk import MemoryKeyProvider, PersonaClient, Sealer, SyncAgent, MemoryTransport
        from edgepersona.sdk.protocol import generate_collector_keypair
        private, public = generate_collector_keypair()
        client = PersonaClient.open({str(bundle_dir)!r}, store={str(tmp_path / "app.db")!r},
                                    key_provider=MemoryKeyProvider(b"k" * 32),
                                    trusted_keys=[{public_key!r}])
        client.track("purchase", 10.0, subject="ann")
        client.assign(subject="ann")
        agent = SyncAgent(client, Sealer(public, app_id="app"),
                          MemoryTransport(lambda body: b"{{}}", lambda version: b""))
        agent.contribute(subject="ann")
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core"))))
        """
    assert run_python(code, tmp_path) == []


def test_the_check_itself_sees_heavy_modules(tmp_path: Path) -> None:
    # Guards the two tests above against passing vacuously, and shows that
    # onnxruntime (allowed) is not mistaken for onnx (not allowed).
    assert "onnx" in heavy_modules_after("import onnx\n", tmp_path)
    assert heavy_modules_after("import onnxruntime\n", tmp_path) == []


@pytest.fixture
def without_onnxruntime(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import onnxruntime`` fails, as on a board with no wheel."""
    shadow = tmp_path / "shadow" / "onnxruntime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        'raise ImportError("onnxruntime has no wheel for this device")\n', encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(shadow.parent), *filter(None, [env.get("PYTHONPATH")])])
    return env


def test_without_onnxruntime_the_numpy_fallback_gives_the_same_labels(
        tmp_path: Path, without_onnxruntime: dict[str, str], bundle_dir: Path, bundle_zip: Path,
        public_key: bytes, bundle_training_rows: np.ndarray) -> None:
    rows_path = tmp_path / "rows.npy"
    np.save(rows_path, bundle_training_rows)
    code = f"""
        import json, sys
        import numpy as np
        from edgepersona.sdk import InputError, PersonaRuntime
        try:
            import onnxruntime
        except ImportError:
            pass
        else:
            raise SystemExit("the shadow onnxruntime did not take effect")
        rows = np.load({str(rows_path)!r})
        out = {{}}
        for bundle in ({str(bundle_dir)!r}, {str(bundle_zip)!r}):
            runtime = PersonaRuntime.open(bundle, trusted_keys=[{public_key!r}])
            out.setdefault("backends", []).append(runtime.backend)
            out.setdefault("labels", []).append([r.index for r in runtime.assign_many(rows)])
            out.setdefault("single", []).append([runtime.assign(r).index for r in rows[:20]])
        try:
            PersonaRuntime.open({str(bundle_dir)!r}, trusted_keys=[{public_key!r}],
                                backend="onnxruntime")
        except InputError as exc:
            out["explicit"] = str(exc)
        out["loaded"] = "onnxruntime" in sys.modules
        print(json.dumps(out))
        """
    out = run_python(code, tmp_path, without_onnxruntime)
    assert out["backends"] == ["numpy", "numpy"]
    assert not out["loaded"]
    assert "numpy" in out["explicit"]  # asking for onnxruntime explicitly says what to use

    graph = PersonaRuntime.open(bundle_dir, trusted_keys=[public_key])
    assert graph.backend == "onnxruntime"
    onnx_labels = [r.index for r in graph.assign_many(bundle_training_rows)]
    assert out["labels"] == [onnx_labels, onnx_labels]
    assert out["single"] == [onnx_labels[:20], onnx_labels[:20]]
