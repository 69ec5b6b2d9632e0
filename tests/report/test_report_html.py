"""The persona report as HTML text: content, maths, escaping, structure, no network."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from html.parser import HTMLParser

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import InputError, Manifest
from edgepersona.trainer.release.refit import PersonaAggregates, RefitResult, refit_bundle
from edgepersona.trainer.release.train import TrainResult
from edgepersona.trainer.report import render_persona_report
from edgepersona.trainer.report._analysis import (
    centroid_map,
    compare_versions,
    feature_z_scores,
    parse_drift_markdown,
)

VOID = {"meta", "br", "hr", "img", "input", "link", "source", "wbr", "col", "area", "base"}


class Page(HTMLParser):
    """Collects what the structural checks need; fails on mismatched or unclosed tags."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.starts: list[tuple[str, dict[str, str]]] = []
        self.headings: list[int] = []
        self.ids: list[str] = []
        self.text: list[str] = []
        self.style = ""
        self._in_style = False
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.starts.append((tag, values))
        if "id" in values:
            self.ids.append(values["id"])
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        self._in_style = tag == "style"
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
        else:
            self.text.append(data)

    def tags(self, name: str) -> list[dict[str, str]]:
        return [attrs for tag, attrs in self.starts if tag == name]


def report(manifest: Manifest, previous: Manifest | None = None, drift: str | None = None) -> str:
    return render_persona_report(manifest, previous=previous, drift_markdown=drift)


def with_privacy(manifest: Manifest, **update: object) -> Manifest:
    return manifest.model_copy(update={"privacy": manifest.privacy.model_copy(update=update)})


def test_every_persona_has_a_card_with_name_share_description_and_traits(
        trained: TrainResult) -> None:
    manifest = trained.manifest
    page = report(manifest)
    parsed = Page(page)
    articles = [a for a in parsed.tags("article") if "persona" in a.get("class", "")]
    assert [a["id"] for a in articles] == [f"persona-{p.id}" for p in manifest.personas]
    text = " ".join(parsed.text)
    for card in manifest.personas:
        assert card.name in text and card.description in text and f"{card.share:.1%}" in text
        assert all(t.sentence in text for t in card.traits)
        assert f'id="profile-{card.id}"' in page
    assert "Shares come from noisy counts" not in text


def test_profiles_are_centroid_z_scores_and_agree_with_the_card_traits(
        trained: TrainResult) -> None:
    manifest = trained.manifest
    z = feature_z_scores(manifest)
    weights = np.asarray(manifest.spec.normalised_weights())
    np.testing.assert_allclose(z * np.sqrt(weights), np.asarray(manifest.assigner.centroids))
    names = list(manifest.spec.names)
    for card in manifest.personas:  # traits are member means; a converged centroid is one too
        for trait in card.traits:
            assert z[card.index, names.index(trait.feature)] == pytest.approx(trait.z, abs=0.02)


def test_text_from_the_manifest_is_escaped(trained: TrainResult) -> None:
    manifest = trained.manifest
    hostile = manifest.personas[0].model_copy(update={
        "name": "<script>alert(1)</script>", "description": 'Fans of "A & B" <b>'})
    edited = manifest.model_copy(update={
        "personas": (hostile, *manifest.personas[1:]),
        "lineage": {"source": '"><img src=x onerror=alert(1)>'}})
    page = report(edited)
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Fans of &quot;A &amp; B&quot; &lt;b&gt;" in page
    assert not Page(page).errors


def test_noisy_count_caveat_appears_with_epsilon(trained: TrainResult) -> None:
    page = report(with_privacy(trained.manifest, epsilon=0.5, delta=1e-6, mechanism="gaussian"))
    text = " ".join(Page(page).text)
    assert text.count("Shares come from noisy counts (differential privacy, ε = 0.5)") == (
        1 + len(trained.manifest.personas))  # the overview and every card
    assert "ε = 0.5, δ = 1e-06 (gaussian)" in text


def test_quality_scores_are_explained_in_one_line_each(trained: TrainResult) -> None:
    text = " ".join(Page(report(trained.manifest)).text)
    metrics = trained.manifest.metrics
    assert metrics.silhouette is not None and metrics.stability_ari is not None
    assert f"{metrics.silhouette:.2f}" in text and f"{metrics.stability_ari:.2f}" in text
    for phrase in ("how clearly users belong", "0 is best", "1 is identical"):
        assert phrase in text.lower()


def test_a_refit_says_what_changed_and_why_scores_are_missing(
        trained: TrainResult, refit_v2: RefitResult) -> None:
    drift = refit_v2.drift
    markdown = drift.to_markdown(1, 2)
    page = report(refit_v2.manifest, trained.manifest, markdown)
    text = " ".join(Page(page).text)
    assert "What changed since v1" in text and "NEEDS REVIEW (threshold 15%)" in text
    assert "4 of 4 persona ids carried over" in text
    assert "not computed" in text and "cannot be computed" in text
    for pid, move in zip(drift.ids, drift.moves, strict=True):
        assert f"{move:.1%}" in text, pid  # the table repeats the gate's numbers
    assert 'id="share-changes"' in page and 'id="centroid-moves"' in page
    assert page.index('id="changes"') < page.index('id="overview"')  # the news first


def test_versions_compare_exactly_as_the_drift_gate_does(
        trained: TrainResult, refit_v2: RefitResult) -> None:
    changes = compare_versions(trained.manifest, refit_v2.manifest)
    drift = refit_v2.drift
    assert changes.carried_ids and changes.comparable and not changes.gone
    assert [r.previous_id for r in changes.rows] == list(drift.ids)
    moves = [r.move for r in changes.rows]
    assert None not in moves
    np.testing.assert_allclose(np.asarray(moves, dtype=np.float64), np.asarray(drift.moves),
                               atol=1e-12)
    assert [r.share_before for r in changes.rows] == pytest.approx(drift.shares_before)
    assert [r.share_after for r in changes.rows] == pytest.approx(drift.shares_after)


def test_a_vanished_persona_is_named(trained: TrainResult,
                                     bundle_training_rows: npt.NDArray[np.float64],
                                     signing_key: Ed25519PrivateKey,
                                     aggregates_of: Callable[..., PersonaAggregates]) -> None:
    weights = np.array([1.0, 1.0, 1.0, 0.01])  # P4 falls under k-min
    refit = refit_bundle(trained.manifest, aggregates_of(trained, bundle_training_rows, weights),
                         signing_key, k_min=5)
    assert refit.drift.vanished == ("P4",)
    text = " ".join(Page(report(refit.manifest, trained.manifest)).text)
    assert "Vanished since v1" in text and trained.manifest.personas[3].name in text
    assert "fewer than 5 contributions" in text
    without_previous = " ".join(Page(report(refit.manifest)).text)
    assert "carried over from v1: P1, P2, P3" in without_previous
    assert "P4: fewer than 5 contributions" in without_previous


def test_a_fresh_fit_is_matched_to_the_closest_previous_persona(
        trained: TrainResult, trained_v2: TrainResult) -> None:
    changes = compare_versions(trained.manifest, trained_v2.manifest)
    assert not changes.carried_ids and changes.comparable
    assert all(r.previous_id is not None and r.move is not None for r in changes.rows)
    text = " ".join(Page(report(trained_v2.manifest, trained.manifest)).text)
    assert "fitted afresh" in text and "closest v1 persona" in text


def test_previous_must_be_an_older_version_of_the_same_model(
        trained: TrainResult, trained_v2: TrainResult) -> None:
    with pytest.raises(InputError, match="not older"):
        report(trained.manifest, trained_v2.manifest)
    other = trained.manifest.model_copy(update={"model_id": "other-model"})
    with pytest.raises(InputError, match="same model"):
        report(trained_v2.manifest, other)


def test_the_page_is_well_formed_and_accessible(trained: TrainResult,
                                                refit_v2: RefitResult) -> None:
    page = Page(report(refit_v2.manifest, trained.manifest, refit_v2.drift.to_markdown(1, 2)))
    assert not page.errors
    assert page.headings[0] == 1 and page.headings.count(1) == 1
    assert all(b - a <= 1 for a, b in zip(page.headings, page.headings[1:], strict=False))
    assert len(page.ids) == len(set(page.ids))
    for landmark in ("header", "main", "footer", "nav", "section", "figure", "figcaption"):
        assert page.tags(landmark), landmark
    assert page.tags("html")[0]["lang"] == "en"
    svgs = page.tags("svg")
    assert len(svgs) == len(page.tags("figure")) == len(page.tags("figcaption"))
    for svg in svgs:
        assert svg["role"] == "img"
        assert all(ref in page.ids for ref in svg["aria-labelledby"].split())
    assert len(page.tags("title")) == 1 + len(svgs)  # the document's and one per chart
    assert len(page.tags("table")) >= len(svgs) - 1  # a table alternative (moves: in the table)


def test_the_page_loads_nothing_and_its_policy_forbids_loading(trained: TrainResult) -> None:
    page = report(trained.manifest)
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    parsed = Page(page)
    for _tag, attrs in parsed.starts:
        assert "src" not in attrs and "style" not in attrs
        assert attrs.get("href", "#").startswith("#")
        assert not any(name.startswith("on") for name in attrs)
    (policy,) = [m["content"] for m in parsed.tags("meta") if m.get("http-equiv")]
    digest = base64.b64encode(hashlib.sha256(parsed.style.encode()).digest()).decode()
    assert policy.startswith("default-src 'none'; style-src 'sha256-" + digest + "'")


def test_rendering_is_deterministic_and_works_for_two_personas(trained: TrainResult) -> None:
    manifest = trained.manifest
    assert report(manifest) == report(manifest)
    two = manifest.model_copy(update={
        "personas": manifest.personas[:2],
        "assigner": manifest.assigner.model_copy(update={
            "centroids": manifest.assigner.centroids[:2]}),
        "metrics": manifest.metrics.model_copy(update={"k": 2})})
    page = report(two)
    assert not Page(page).errors and page.count('class="persona c') == 2


def test_centroid_map_keeps_distances_and_handles_rank_one() -> None:
    rng = np.random.default_rng(3)
    plane = rng.normal(size=(5, 2)) @ rng.normal(size=(2, 6))  # rank 2 in 6-D
    mapped = centroid_map(plane, np.full(5, 0.2))
    gaps = np.linalg.norm(plane[:, None] - plane[None], axis=2)
    mapped_gaps = np.linalg.norm(mapped.coords[:, None] - mapped.coords[None], axis=2)
    np.testing.assert_allclose(mapped_gaps, gaps, atol=1e-9)
    assert sum(mapped.explained) == pytest.approx(1.0)
    line = centroid_map(np.array([[1.0, 2.0], [-1.0, -2.0]]), np.array([0.5, 0.5]))
    assert line.explained == pytest.approx((1.0, 0.0))
    np.testing.assert_allclose(line.coords[:, 1], 0.0)
    np.testing.assert_allclose(np.abs(line.coords[:, 0]), np.sqrt(5.0))


def test_drift_markdown_reads_back(refit_v2: RefitResult) -> None:
    summary = parse_drift_markdown(refit_v2.drift.to_markdown(1, 2))
    assert summary.needs_review and summary.verdict == "NEEDS REVIEW"
    assert summary.threshold == pytest.approx(0.15)
    assert summary.headers[0] == "persona" and len(summary.rows) == 4
    unknown = parse_drift_markdown("something else entirely")
    assert unknown.verdict == "" and unknown.notes == ("something else entirely",)
