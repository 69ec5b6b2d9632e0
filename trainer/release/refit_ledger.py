"""Private refits paid for before they are signed: whose budget, checked, spent.

Whose budget. A refit's contributions come from the devices that run the model
line, so its people are the people that line was trained on: a refit spends
from the source the previous version's ``lineage.source`` names (``source=``
may name another budgeted source instead), and, by the source-identity rule of
:mod:`edgepersona.trainer.privacy.source_identity`, from every budgeted source
that shares those people. A refit never sees user ids, so the ledger's own
sketch of the model line's source stands in for them: a budget opened for the
same people under another name is charged too.

Order. :func:`check_refit` before any noise is drawn, the noise
(:func:`~edgepersona.trainer.release.refit.plan_refit`), :func:`spend_refit`,
then :func:`~edgepersona.trainer.release.refit.sign_refit` with the spend, so
the manifest records the ledger head it was paid at (like a private train) and
the audit's "ledger not behind the release" check applies. A spend stands if
signing or writing then fails (fail safe: the noise was drawn).

Same ledger. When the previous version records the ledger it was spent from,
the refit must use that ledger, still holding that entry: a new or rolled-back
ledger would give the same people a fresh budget.
"""

from __future__ import annotations

from edgepersona.sdk import InputError, Manifest, ModelIntegrityError
from edgepersona.trainer.privacy.ledger import PrivacyLedger
from edgepersona.trainer.privacy.source_identity import SourceSketch
from edgepersona.trainer.release.refit import RefitPrivacy, RefitSpend

__all__ = ["check_refit", "line_source", "spend_refit"]


def line_source(previous: Manifest) -> str | None:
    """The ledger source the model line's lineage names.

    Args:
        previous: the manifest devices assigned with.

    Returns:
        ``lineage.source``, or None when it names none.
    """
    source = previous.lineage.get("source")
    return source if isinstance(source, str) and source else None


def _same_ledger(ledger: PrivacyLedger, previous: Manifest) -> None:
    """Refuse a ledger other than the one the previous version recorded, or one behind it."""
    lineage = previous.lineage
    recorded, seq, head = lineage.get("ledger_id"), lineage.get("ledger_seq"), lineage.get("ledger_head")
    if not isinstance(recorded, str) or not recorded:
        return
    if ledger.ledger_id != recorded:
        raise ModelIntegrityError(
            f"v{previous.version} of {previous.model_id} was spent from ledger {recorded[:12]}…, not"
            " this one; refit against that ledger (a new ledger would give the same people a fresh"
            " budget)")
    if isinstance(seq, int) and isinstance(head, str):
        ledger.verify_head(seq, head)


def _charge(ledger: PrivacyLedger, previous: Manifest, source: str | None
            ) -> tuple[str, SourceSketch | None]:
    """The source to spend from and the sketch of the model line's people."""
    named = line_source(previous)
    chosen = source or named
    if chosen is None:
        raise InputError(f"v{previous.version} of {previous.model_id} names no source in its lineage;"
                         " pass --source: the budgeted source of the people its devices belong to")
    return chosen, ledger.people(named) if named is not None else None


def check_refit(ledger: PrivacyLedger, previous: Manifest, privacy: RefitPrivacy,
                source: str | None = None) -> str:
    """Refuse, before any noise is drawn, a private refit its budgets cannot pay for.

    Args:
        ledger: the ledger the model line is spent from.
        previous: the verified manifest devices assigned with.
        privacy: the refit's ε and δ.
        source: a budgeted source to spend from (default: the previous lineage's).

    Returns:
        The source the refit will be spent from.

    Raises:
        BudgetExceededError: the refit would exceed a budget it is charged to, or the
            source has none.
        ModelIntegrityError: the previous version was spent from another ledger, or
            this one no longer holds its entry.
        InputError: no source can be named, or ε/δ out of range.
    """
    _same_ledger(ledger, previous)
    chosen, people = _charge(ledger, previous, source)
    ledger.check(chosen, epsilon=privacy.epsilon, delta=privacy.delta, sketch=people)
    return chosen


def spend_refit(ledger: PrivacyLedger, previous: Manifest, privacy: RefitPrivacy,
                source: str | None = None) -> RefitSpend:
    """Record a private refit of ``previous`` in the ledger (call once its noise is drawn).

    Args:
        ledger: the ledger the model line is spent from.
        previous: the verified manifest devices assigned with.
        privacy: the refit's ε and δ.
        source: as for :func:`check_refit`.

    Returns:
        The spend, for :func:`~edgepersona.trainer.release.refit.sign_refit`.

    Raises:
        BudgetExceededError: a budget it is charged to cannot pay (nothing written).
        InputError: no source can be named.
    """
    chosen, people = _charge(ledger, previous, source)
    seq, head = ledger.spend(chosen, epsilon=privacy.epsilon, delta=privacy.delta,
                             note=f"{previous.model_id} v{previous.version + 1}", sketch=people)
    return RefitSpend(chosen, ledger.ledger_id or "", seq, head)
