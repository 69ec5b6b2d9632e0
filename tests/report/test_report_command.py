"""``edgepersona report``'s handler: verify first, find the drift report, write atomically."""

from __future__ import annotations

import argparse
import html
import shutil
from pathlib import Path

import pytest

from edgepersona.sdk import PersonaError
from edgepersona.sdk.protocol.bundle import MANIFEST_NAME
from edgepersona.trainer.cli._report import drift_markdown_beside, report, write_text_atomic
from edgepersona.trainer.release.export import write_bundle
from edgepersona.trainer.release.refit import RefitResult, write_refit
from edgepersona.trainer.release.train import TrainResult


def args(bundle: Path, key: Path, out: Path, previous: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(bundle=str(bundle), trusted_key=[str(key)], html=str(out),
                              previous=str(previous) if previous else None)


@pytest.fixture(scope="module")
def key_file(public_key: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "signing_key.pub.pem"
    path.write_bytes(public_key)
    return path


def test_report_of_a_verified_bundle(bundle_dir: Path, key_file: Path, trained: TrainResult,
                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nested" / "report.html"
    assert report(args(bundle_dir, key_file, out)) == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert all(html.escape(card.name) in page for card in trained.manifest.personas)
    assert "What changed" not in page
    assert f"wrote {out}" in capsys.readouterr().out.replace("\n", "")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary left


def test_nothing_is_written_for_an_untrusted_or_tampered_bundle(
        bundle_dir: Path, key_file: Path, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger.pub.pem"
    from edgepersona.trainer.release.keys import generate_signing_key

    _, stranger_public, _ = generate_signing_key(tmp_path / "stranger")
    shutil.copy(stranger_public, stranger)
    out = tmp_path / "report.html"
    with pytest.raises(PersonaError):
        report(args(bundle_dir, stranger, out))
    tampered = Path(shutil.copytree(bundle_dir, tmp_path / "tampered"))
    manifest = tampered / MANIFEST_NAME
    manifest.write_bytes(manifest.read_bytes().replace(b'"P1"', b'"P9"'))
    with pytest.raises(PersonaError):
        report(args(tampered, key_file, out))
    assert not out.exists()


def test_a_refit_report_reads_the_previous_bundle_and_the_drift_verdict(
        bundle_dir: Path, key_file: Path, refit_v2: RefitResult, tmp_path: Path) -> None:
    folder = write_refit(refit_v2, tmp_path / "v2")
    for bundle in (folder, tmp_path / "v2.zip"):
        assert drift_markdown_beside(bundle) == tmp_path / "v2.drift.md"
        out = tmp_path / f"{bundle.name}.html"
        assert report(args(bundle, key_file, out, previous=bundle_dir)) == 0
        page = out.read_text(encoding="utf-8")
        assert "What changed since v1" in page and "NEEDS REVIEW" in page
        assert 'id="centroid-moves"' in page


def test_the_previous_bundle_is_verified_too(bundle_dir: Path, key_file: Path,
                                             refit_v2: RefitResult, tmp_path: Path) -> None:
    folder = write_refit(refit_v2, tmp_path / "v2")
    tampered = Path(shutil.copytree(bundle_dir, tmp_path / "v1"))
    (tampered / "cards.md").write_text("edited", encoding="utf-8")
    with pytest.raises(PersonaError):
        report(args(folder, key_file, tmp_path / "r.html", previous=tampered))
    assert not (tmp_path / "r.html").exists()


def test_no_drift_report_beside_a_first_version(bundle_files: dict[str, bytes],
                                                tmp_path: Path) -> None:
    folder = write_bundle(tmp_path / "v1", bundle_files)
    assert drift_markdown_beside(folder) is None


def test_atomic_write_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "page.html"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two ε")
    assert target.read_text(encoding="utf-8") == "two ε"
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_the_command_line_runs_the_report(bundle_dir: Path, key_file: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from edgepersona.trainer.cli import main

    out = tmp_path / "report.html"
    code = main(["report", str(bundle_dir), "--trusted-key", str(key_file), "--html", str(out)])
    assert code == 0 and out.read_text(encoding="utf-8").startswith("<!doctype html>")
    code = main(["report", str(bundle_dir), "--trusted-key", str(key_file), "--previous",
                 str(bundle_dir), "--html", str(tmp_path / "same.html")])
    assert code == 1 and "not older than v1" in capsys.readouterr().err
