"""Privacy ledger: Gaussian accounting, budgets, tamper evidence, crashes (a state machine)."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edgepersona.sdk import InputError, ModelIntegrityError
from edgepersona.trainer.errors import BudgetExceededError
from edgepersona.trainer.privacy import ledger_store as ledger_module
from edgepersona.trainer.privacy.accounting import gaussian_delta, gaussian_epsilon, gaussian_mu
from edgepersona.trainer.privacy.ledger import PrivacyLedger

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
DELTA = 1e-6


def ledger_with_budget(tmp_path: Path, epsilon: float = 3.0) -> PrivacyLedger:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", KEY)
    ledger.set_budget("retail", epsilon=epsilon, delta=DELTA)
    return ledger


# --- accounting -------------------------------------------------------------------------

def test_gaussian_mu_matches_the_analytic_gaussian_mechanism() -> None:
    # Balle & Wang (2018): sensitivity 1, eps = 1, delta = 1e-5 needs sigma ~ 3.73.
    assert 1.0 / gaussian_mu(1.0, 1e-5) == pytest.approx(3.73, abs=0.01)
    for eps, delta in [(0.1, 1e-6), (1.0, 1e-6), (10.0, 1e-9)]:
        mu = gaussian_mu(eps, delta)
        assert gaussian_delta(mu, eps) <= delta < gaussian_delta(mu * 1.001, eps)
        assert gaussian_epsilon(mu, delta) == pytest.approx(eps, rel=1e-6)


def test_gaussian_accounting_is_tighter_than_the_generic_zcdp_bound() -> None:
    eps = 1.0
    rho = gaussian_mu(eps, DELTA) ** 2 / 2
    assert rho + 2 * math.sqrt(rho * math.log(1 / DELTA)) > eps  # zCDP would call it over budget


def test_gaussian_mu_refuses_delta_zero_and_bad_epsilon() -> None:
    with pytest.raises(InputError, match="delta > 0"):
        gaussian_mu(1.0, 0.0)
    with pytest.raises(InputError, match="epsilon"):
        gaussian_mu(-1.0, DELTA)


# --- budgets ----------------------------------------------------------------------------

def test_a_single_release_may_use_the_whole_budget(tmp_path: Path) -> None:
    ledger = ledger_with_budget(tmp_path, epsilon=1.0)
    ledger.check("retail", epsilon=1.0, delta=DELTA)
    ledger.spend("retail", epsilon=1.0, delta=DELTA, note="v1")
    assert ledger.status("retail").spent_epsilon == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(BudgetExceededError):
        ledger.check("retail", epsilon=0.01, delta=DELTA)


def test_gaussian_releases_compose_in_rho(tmp_path: Path) -> None:
    ledger = ledger_with_budget(tmp_path)
    for _ in range(4):
        ledger.spend("retail", epsilon=1.0, delta=DELTA)
    # Four equal Gaussians are one Gaussian with twice the mu: far below 4 x eps = 4.
    expected = gaussian_epsilon(2 * gaussian_mu(1.0, DELTA), DELTA)
    assert ledger.status("retail").spent_epsilon == pytest.approx(expected, rel=1e-6)
    assert expected < 2.5


def test_refusal_says_what_is_left_and_what_was_asked(tmp_path: Path) -> None:
    ledger = ledger_with_budget(tmp_path, epsilon=2.0)
    ledger.spend("retail", epsilon=1.5, delta=DELTA)
    left = ledger.status("retail").remaining_epsilon(DELTA)
    assert 0.5 < left < 1.5
    with pytest.raises(BudgetExceededError) as caught:
        ledger.check("retail", epsilon=1.5, delta=DELTA)
    message = str(caught.value)
    assert "'retail'" in message and "asks ε=1.5" in message and f"ε={left:.4g} is left" in message
    ledger.check("retail", epsilon=left * 0.999, delta=DELTA)
    with pytest.raises(BudgetExceededError):  # spend re-checks under the lock
        ledger.spend("retail", epsilon=1.5, delta=DELTA)
    assert ledger.status("retail").releases == 1


def test_other_mechanisms_use_basic_composition(tmp_path: Path) -> None:
    ledger = ledger_with_budget(tmp_path, epsilon=1.0)
    ledger.spend("retail", epsilon=0.4, delta=0.0, mechanism="other")
    ledger.spend("retail", epsilon=0.4, delta=0.0, mechanism="other")
    assert ledger.status("retail").spent_epsilon == pytest.approx(0.8)
    with pytest.raises(BudgetExceededError):
        ledger.check("retail", epsilon=0.3, delta=0.0, mechanism="other")


def test_budgets_are_per_source_and_set_once(tmp_path: Path) -> None:
    ledger = ledger_with_budget(tmp_path, epsilon=1.0)
    with pytest.raises(BudgetExceededError, match="no privacy budget"):
        ledger.check("wholesale", epsilon=0.1, delta=DELTA)
    ledger.set_budget("wholesale", epsilon=5.0, delta=DELTA)
    ledger.spend("wholesale", epsilon=4.0, delta=DELTA)
    ledger.check("retail", epsilon=1.0, delta=DELTA)
    with pytest.raises(InputError, match="already has a budget"):
        ledger.set_budget("retail", epsilon=100.0, delta=DELTA)


# --- integrity and crashes ----------------------------------------------------------------

def spent_ledger(tmp_path: Path) -> tuple[PrivacyLedger, list[bytes]]:
    ledger = ledger_with_budget(tmp_path, epsilon=10.0)
    for version in range(3):
        ledger.spend("retail", epsilon=1.0, delta=DELTA, note=f"v{version}")
    return ledger, ledger.path.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("edit", ["flip", "swap", "drop", "edit-last", "foreign-key"])
def test_tampering_is_detected(tmp_path: Path, edit: str) -> None:
    ledger, lines = spent_ledger(tmp_path)
    if edit == "flip":
        lines[1] = lines[1].replace(b'"epsilon":1.0', b'"epsilon":0.1')
    elif edit == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    elif edit == "drop":
        del lines[2]
    elif edit == "edit-last":
        lines[-1] = lines[-1].replace(b'"note":"v2"', b'"note":"v9"')
    else:
        PrivacyLedger(tmp_path / "other.jsonl", OTHER_KEY).set_budget("retail", epsilon=9, delta=DELTA)
        lines[0] = (tmp_path / "other.jsonl").read_bytes()
    ledger.path.write_bytes(b"".join(lines))
    with pytest.raises(ModelIntegrityError, match="edited, reordered or truncated"):
        PrivacyLedger(ledger.path, KEY)
    with pytest.raises(ModelIntegrityError):
        ledger.check("retail", epsilon=0.1, delta=DELTA)


def test_a_torn_last_line_is_ignored_reported_and_repaired(tmp_path: Path) -> None:
    ledger, lines = spent_ledger(tmp_path)
    ledger.path.write_bytes(b"".join(lines[:-1]) + lines[-1][:40])
    reopened = PrivacyLedger(ledger.path, KEY)
    assert reopened.torn_tail == 40
    assert reopened.status("retail").releases == 2
    reopened.spend("retail", epsilon=1.0, delta=DELTA)
    assert reopened.torn_tail == 0
    assert reopened.status("retail").releases == 3
    assert all(json.loads(line)["seq"] == n for n, line in enumerate(ledger.path.read_bytes().splitlines()))


def test_a_complete_entry_without_its_newline_still_counts(tmp_path: Path) -> None:
    ledger, lines = spent_ledger(tmp_path)
    ledger.path.write_bytes(b"".join(lines)[:-1])
    assert ledger.status("retail").releases == 3
    ledger.spend("retail", epsilon=1.0, delta=DELTA)
    assert ledger.status("retail").releases == 4


def test_verify_head_detects_truncation_at_the_end(tmp_path: Path) -> None:
    ledger, lines = spent_ledger(tmp_path)
    seq, digest = ledger.head
    ledger.verify_head(seq, digest)
    ledger.path.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(ModelIntegrityError, match="truncated or replaced"):
        ledger.verify_head(seq, digest)


# --- the state machine ----------------------------------------------------------------------

BUDGETS = {"retail": 2.0, "wholesale": 0.7}
ASKS = st.sampled_from([0.05, 0.2, 0.5, 1.0, 1.5])


class LedgerMachine(RuleBasedStateMachine):
    """Releases, refusals, restarts, kills mid-append and tampering on one ledger file.

    The model keeps, per source, the sum of mu^2 of the releases whose ``spend``
    returned; the ledger must agree with it after every step and never exceed
    the budget.
    """

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp())
        self.ledger = PrivacyLedger(self.directory / "ledger.jsonl", KEY)
        for source, epsilon in BUDGETS.items():
            self.ledger.set_budget(source, epsilon=epsilon, delta=DELTA)
        self.mu2 = dict.fromkeys(BUDGETS, 0.0)
        self.releases = dict.fromkeys(BUDGETS, 0)

    def model_epsilon(self, source: str, extra: float = 0.0) -> float:
        return gaussian_epsilon(math.sqrt(self.mu2[source] + extra**2), DELTA)

    @rule(source=st.sampled_from(sorted(BUDGETS)), epsilon=ASKS)
    def release(self, source: str, epsilon: float) -> None:
        fits = self.model_epsilon(source, gaussian_mu(epsilon, DELTA)) <= BUDGETS[source] * (1 + 1e-9)
        if not fits:
            with pytest.raises(BudgetExceededError):
                self.ledger.check(source, epsilon=epsilon, delta=DELTA)
            with pytest.raises(BudgetExceededError):
                self.ledger.spend(source, epsilon=epsilon, delta=DELTA)
            return
        self.ledger.check(source, epsilon=epsilon, delta=DELTA)
        self.ledger.spend(source, epsilon=epsilon, delta=DELTA)
        self.mu2[source] += gaussian_mu(epsilon, DELTA) ** 2
        self.releases[source] += 1

    @rule(source=st.sampled_from(sorted(BUDGETS)), epsilon=ASKS, keep=st.floats(0.05, 0.95))
    def killed_while_appending(self, source: str, epsilon: float, keep: float) -> None:
        def die_part_way(fd: int, data: bytes, offset: int) -> None:
            ledger_module.os.pwrite(fd, data[:max(1, int(len(data) * keep))], offset)
            raise SystemExit("killed")

        with mock.patch.object(ledger_module, "_write_all", die_part_way), \
                pytest.raises((SystemExit, BudgetExceededError)):
            self.ledger.spend(source, epsilon=epsilon, delta=DELTA)

    @rule()
    def restart(self) -> None:
        self.ledger = PrivacyLedger(self.ledger.path, KEY)

    @precondition(lambda self: sum(self.releases.values()) >= 2)
    @rule(how=st.sampled_from(["flip", "swap", "drop"]), pick=st.integers(0, 10**6))
    def tamper_then_restore(self, how: str, pick: int) -> None:
        original = self.ledger.path.read_bytes()
        lines = original.split(b"\n")[:-1]  # complete lines (a torn tail is left out)
        at = pick % (len(lines) - 1)
        if how == "flip":
            lines[at] = lines[at].replace(b'"delta":', b'"delta":0', 1)
        elif how == "swap":
            lines[at], lines[at + 1] = lines[at + 1], lines[at]
        else:
            del lines[at]
        self.ledger.path.write_bytes(b"\n".join(lines) + b"\n")
        with pytest.raises(ModelIntegrityError):
            PrivacyLedger(self.ledger.path, KEY)
        self.ledger.path.write_bytes(original)

    @invariant()
    def agrees_with_the_model_and_stays_within_budget(self) -> None:
        for source, budget in BUDGETS.items():
            status = self.ledger.status(source)
            assert status.releases == self.releases[source]
            assert status.spent_epsilon == pytest.approx(self.model_epsilon(source), rel=1e-9)
            assert status.spent_epsilon <= budget * (1 + 1e-9)

    def teardown(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
