"""Key rotation policies: ISO 8601 durations, validation as the service does it, and when a
policy's Rotate action falls due for a key's latest version."""

from __future__ import annotations

import calendar
import datetime
import re
from dataclasses import dataclass
from typing import Any

from ._errors import bad_parameter

__all__ = ["DEFAULT_POLICY_ACTIONS", "Duration", "LifetimeAction", "RotationPolicy"]

DAY = 86400
# The service's documented minimums: an expiry of 28 days, and every trigger at least 7 days
# from creation or from expiry.
MIN_EXPIRY_SECONDS = 28 * DAY
MIN_TRIGGER_SECONDS = 7 * DAY
MAX_DURATION_CHARS = 32
MAX_COMPONENT = 100_000
MAX_ACTIONS = 2
_DURATION = re.compile(
    r"P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?"
)
ACTION_TYPES = {"rotate": "Rotate", "notify": "Notify"}


@dataclass(frozen=True)
class Duration:
    """An ISO 8601 duration such as ``P90D``, ``P2M`` or ``P1Y``, kept as written. Years and
    months are calendar steps: a month after 31 January is the last day of February."""

    text: str
    months: int
    seconds: int

    @classmethod
    def parse(cls, value: Any, what: str) -> Duration:
        if not isinstance(value, str) or len(value) > MAX_DURATION_CHARS:
            raise bad_parameter(f"'{what}' must be an ISO 8601 duration such as P90D.")
        match = _DURATION.fullmatch(value)
        if match is None or value in ("P", "PT"):
            raise bad_parameter(f"'{what}' must be an ISO 8601 duration such as P90D.")
        parts = {name: int(number or 0) for name, number in match.groupdict().items()}
        if any(number > MAX_COMPONENT for number in parts.values()):
            raise bad_parameter(f"'{what}' is too long a duration.")
        months = parts["years"] * 12 + parts["months"]
        seconds = (
            (parts["weeks"] * 7 + parts["days"]) * DAY
            + parts["hours"] * 3600
            + parts["minutes"] * 60
            + parts["seconds"]
        )
        if months == 0 and seconds == 0:
            raise bad_parameter(f"'{what}' must be longer than zero.")
        return cls(value, months, seconds)

    @property
    def shortest_seconds(self) -> int:
        """The least this duration can span (every month 28 days), for the minimum checks."""
        return self.months * 28 * DAY + self.seconds

    @property
    def longest_seconds(self) -> int:
        return self.months * 31 * DAY + self.seconds

    def shift(self, timestamp: int, sign: int = 1) -> int | None:
        """``timestamp`` plus (or minus) this duration; None past the calendar's range."""
        try:
            moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
            month_index = moment.year * 12 + moment.month - 1 + sign * self.months
            year, month = divmod(month_index, 12)
            day = min(moment.day, calendar.monthrange(year, month + 1)[1])
            moved = moment.replace(year=year, month=month + 1, day=day)
            moved += sign * datetime.timedelta(seconds=self.seconds)
        except (OverflowError, ValueError, OSError):
            return None
        return int(moved.timestamp())


@dataclass(frozen=True)
class LifetimeAction:
    action: str
    after_create: Duration | None
    before_expiry: Duration | None

    def to_json(self) -> dict[str, Any]:
        trigger: dict[str, str] = {}
        if self.after_create is not None:
            trigger["timeAfterCreate"] = self.after_create.text
        if self.before_expiry is not None:
            trigger["timeBeforeExpiry"] = self.before_expiry.text
        return {"trigger": trigger, "action": {"type": self.action}}


# What a key that never had a policy reports: a notification 30 days before expiry.
DEFAULT_POLICY_ACTIONS = (LifetimeAction("Notify", None, Duration("P30D", 0, 30 * DAY)),)


def _action(raw: Any) -> LifetimeAction:
    if not isinstance(raw, dict):
        raise bad_parameter("Each lifetime action must be an object.")
    trigger, action = raw.get("trigger"), raw.get("action")
    if not isinstance(trigger, dict) or not isinstance(action, dict):
        raise bad_parameter("A lifetime action needs a 'trigger' and an 'action' object.")
    kind = action.get("type")
    if not isinstance(kind, str) or kind.lower() not in ACTION_TYPES:
        raise bad_parameter("The action type must be 'Rotate' or 'Notify'.")
    after = trigger.get("timeAfterCreate")
    before = trigger.get("timeBeforeExpiry")
    if (after is None) == (before is None):
        raise bad_parameter("A trigger has exactly one of timeAfterCreate and timeBeforeExpiry.")
    after_create = None if after is None else Duration.parse(after, "timeAfterCreate")
    before_expiry = None if before is None else Duration.parse(before, "timeBeforeExpiry")
    for duration in (after_create, before_expiry):
        if duration is not None and duration.shortest_seconds < MIN_TRIGGER_SECONDS:
            raise bad_parameter("A lifetime action's trigger must be at least 7 days (P7D).")
    return LifetimeAction(ACTION_TYPES[kind.lower()], after_create, before_expiry)


@dataclass(frozen=True)
class RotationPolicy:
    """A key's rotation policy as stored; ``created`` is None for the default policy."""

    actions: tuple[LifetimeAction, ...]
    expiry: Duration | None
    created: int | None
    updated: int | None

    @classmethod
    def default(cls) -> RotationPolicy:
        return cls(DEFAULT_POLICY_ACTIONS, None, None, None)

    @classmethod
    def parse(
        cls, body: dict[str, Any], now: int, previous: RotationPolicy | None
    ) -> RotationPolicy:
        """A policy from an update request, validated as the service validates it."""
        raw_actions = body.get("lifetimeActions")
        if raw_actions is None:
            raw_actions = []
        if not isinstance(raw_actions, list) or len(raw_actions) > MAX_ACTIONS:
            raise bad_parameter(f"'lifetimeActions' must be a list of at most {MAX_ACTIONS}.")
        actions = tuple(_action(raw) for raw in raw_actions)
        if len({action.action for action in actions}) != len(actions):
            raise bad_parameter("A policy has at most one Rotate and one Notify action.")
        attributes = body.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise bad_parameter("The parameter 'attributes' must be an object.")
        raw_expiry = attributes.get("expiryTime")
        expiry = None if raw_expiry is None else Duration.parse(raw_expiry, "expiryTime")
        if expiry is not None:
            if expiry.shortest_seconds < MIN_EXPIRY_SECONDS:
                raise bad_parameter("The policy's expiryTime must be at least 28 days (P28D).")
            latest_trigger = expiry.shortest_seconds - MIN_TRIGGER_SECONDS
            for action in actions:
                trigger = action.after_create or action.before_expiry
                if trigger is not None and trigger.longest_seconds > latest_trigger:
                    raise bad_parameter(
                        "A trigger must fall at least 7 days from both creation and expiry."
                    )
        created = previous.created if previous is not None and previous.created else now
        return cls(actions, expiry, created, now)

    def to_json(self, policy_id: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if self.expiry is not None:
            attributes["expiryTime"] = self.expiry.text
        if self.created is not None:
            attributes["created"] = self.created
        if self.updated is not None:
            attributes["updated"] = self.updated
        return {
            "id": policy_id,
            "lifetimeActions": [action.to_json() for action in self.actions],
            "attributes": attributes,
        }

    def rotation_due(self, created: int, expires: int | None) -> int | None:
        """When the Rotate action falls due for a version created at ``created`` that
        expires at ``expires``; None if it never does."""
        for action in self.actions:
            if action.action != "Rotate":
                continue
            if action.after_create is not None:
                return action.after_create.shift(created)
            if action.before_expiry is not None and expires is not None:
                return action.before_expiry.shift(expires, -1)
        return None

    def expiry_for(self, created: int) -> int | None:
        """The ``exp`` a version created at ``created`` gets under this policy."""
        return None if self.expiry is None else self.expiry.shift(created)
