r"""The alert lifecycle: one transition table (`TRANSITIONS`), enforced in one place (`transition`).

| state  \ event | fire  | rise  | ack   | unack | suppress | unsuppress | resolve | expire |
| -------------- | ----- | ----- | ----- | ----- | -------- | ---------- | ------- | ------ |
| firing         | F     | F     | A     | -     | S        | -          | R       | E      |
| acknowledged   | A     | F     | -     | F     | S        | -          | R       | E      |
| suppressed     | S     | S     | A     | -     | S        | F          | R       | E      |
| resolved       | -     | -     | -     | -     | -        | -          | R       | -      |
| expired        | F     | F     | -     | -     | -        | -          | R       | E      |

(F firing, A acknowledged, S suppressed, R resolved, E expired.) `fire` is a (re-)notification that the
alert still fires, `rise` the same with a higher severity (it re-arms an acknowledgement), `expire` the
lease (`endsAt`) running out without news. A `-` is refused (HTTP 409 from the API). A new firing period
after `resolved` is a new episode, not a transition.
"""

from __future__ import annotations

FIRING = "firing"
ACKNOWLEDGED = "acknowledged"
SUPPRESSED = "suppressed"
RESOLVED = "resolved"
EXPIRED = "expired"

STATES = (FIRING, ACKNOWLEDGED, SUPPRESSED, RESOLVED, EXPIRED)
OPEN_STATES = (FIRING, ACKNOWLEDGED, SUPPRESSED)
EVENTS = ("fire", "rise", "ack", "unack", "suppress", "unsuppress", "resolve", "expire")

TRANSITIONS: dict[tuple[str, str], str] = {
    (FIRING, "fire"): FIRING,
    (FIRING, "rise"): FIRING,
    (FIRING, "ack"): ACKNOWLEDGED,
    (FIRING, "suppress"): SUPPRESSED,
    (FIRING, "resolve"): RESOLVED,
    (FIRING, "expire"): EXPIRED,
    (ACKNOWLEDGED, "fire"): ACKNOWLEDGED,
    (ACKNOWLEDGED, "rise"): FIRING,
    (ACKNOWLEDGED, "unack"): FIRING,
    (ACKNOWLEDGED, "suppress"): SUPPRESSED,
    (ACKNOWLEDGED, "resolve"): RESOLVED,
    (ACKNOWLEDGED, "expire"): EXPIRED,
    (SUPPRESSED, "fire"): SUPPRESSED,
    (SUPPRESSED, "rise"): SUPPRESSED,
    (SUPPRESSED, "ack"): ACKNOWLEDGED,
    (SUPPRESSED, "suppress"): SUPPRESSED,
    (SUPPRESSED, "unsuppress"): FIRING,
    (SUPPRESSED, "resolve"): RESOLVED,
    (SUPPRESSED, "expire"): EXPIRED,
    (RESOLVED, "resolve"): RESOLVED,
    (EXPIRED, "fire"): FIRING,
    (EXPIRED, "rise"): FIRING,
    (EXPIRED, "resolve"): RESOLVED,
    (EXPIRED, "expire"): EXPIRED,
}


class InvalidTransition(ValueError):
    """The event is not allowed in the current state."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"cannot {event} an alert that is {state}")
        self.state = state
        self.event = event


def transition(state: str, event: str) -> str:
    """The next state, or InvalidTransition; the only place lifecycle rules live."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def is_open(state: str) -> bool:
    return state in OPEN_STATES
