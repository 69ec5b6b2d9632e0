"""Plain words for event and column names: ``page_view`` → "page views".

Reports, persona names and suggested specs speak of events and columns the
way a person would: separators become spaces, camel case is split, the noun
is made plural, and a handful of common commerce and product events get the
word for the people who do them ("buyers", "visitors"). A spec's own
``event_labels`` (and a feature's ``label``) always win over these guesses.
"""

from __future__ import annotations

import re

__all__ = ["actor_noun", "humanise", "is_money_event", "is_order_id", "plural", "singular"]

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_ACTORS = {
    "purchase": "buyers", "order": "buyers", "buy": "buyers", "checkout": "buyers",
    "transaction": "buyers", "payment": "payers", "page view": "browsers", "pageview": "browsers",
    "view": "browsers", "visit": "visitors", "session": "visitors", "login": "users",
    "return": "returners", "click": "clickers", "subscribe": "subscribers",
    "subscription": "subscribers", "download": "downloaders", "search": "searchers",
    "review": "reviewers", "comment": "commenters", "share": "sharers", "play": "players",
}
_ORDER_IDS = {"invoice", "invoice no", "invoice id", "order", "order id", "order no",
              "transaction", "transaction id", "basket", "basket id", "receipt", "receipt id"}
_MONEY_EVENTS = ("purchase", "order", "buy", "checkout", "transaction", "payment", "spend",
                 "revenue", "sale")


def humanise(name: str) -> str:
    """A name in plain lower-case words: ``ProductRelated_Duration`` → "product related duration".

    Args:
        name: an event or column name.

    Returns:
        The words, lower case (upper-case acronyms kept), single spaces.
    """
    spaced = _CAMEL.sub(" ", name)
    words = re.sub(r"[_\-.:/]+", " ", spaced).split()
    return " ".join(w if (w.isupper() and len(w) > 1) else w.lower() for w in words) or name


def plural(phrase: str) -> str:
    """The plural of a noun phrase's last word ("page view" → "page views").

    Args:
        phrase: a noun phrase in plain words.

    Returns:
        The phrase with its last word made plural (unchanged if it already ends in s).
    """
    head, _, last = phrase.rpartition(" ")
    if not last or last.endswith("s") or last.isupper():
        word = last
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u"):
        word = last[:-1] + "ies"
    elif last.endswith(("ch", "sh", "x", "z")):
        word = last + "es"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def singular(phrase: str) -> str:
    """The event phrase as a noun adjunct ("purchases" → "purchase").

    Args:
        phrase: a noun phrase in plain words.

    Returns:
        The phrase with a trailing plural ``s`` removed (``ies`` → ``y``).
    """
    if phrase.endswith("ies"):
        return phrase[:-3] + "y"
    if phrase.endswith("ss") or not phrase.endswith("s"):
        return phrase
    return phrase[:-1]


def actor_noun(event: str) -> str | None:
    """The word for people who do an event ("purchase" → "buyers"), when it is a common one.

    Args:
        event: the raw event name.

    Returns:
        The plural noun, or None when the event is not a common one.
    """
    words = humanise(event).lower()
    return _ACTORS.get(words) or _ACTORS.get(singular(words))


def is_money_event(event: str) -> bool:
    """Whether an event's value is most likely money (a purchase, an order, a payment).

    Args:
        event: the raw event name.

    Returns:
        True for purchase-like events.
    """
    words = humanise(event).lower()
    return any(word in words for word in _MONEY_EVENTS)


def is_order_id(prop: str) -> bool:
    """Whether a property names an order (invoice, order id, basket): its distinct values are orders.

    Args:
        prop: the property (column) name.

    Returns:
        True for order-like identifiers.
    """
    return humanise(prop).lower() in _ORDER_IDS
