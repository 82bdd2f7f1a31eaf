"""The exclusions step: operator rules that drop pageviews before they are stored.

Rules come from the control plane (shared.control.exclusions) and are swapped in whole by
``Exclusions.update``; a pageview sees either the old rule set or the new one, never a mix.
Instance-wide rules are checked first, then the site's own; within a scope the kinds are
checked in a fixed order (IP/CIDR, country, user agent, path), and the first match decides
the drop reason (``instance_cidr``, ``site_path``, ...).

The step runs after the geo step because country rules compare the looked-up country.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from shared.control.exclusions import INSTANCE_SCOPE, ExclusionKind, ExclusionRule
from shared.networks import IPNetwork, NetworkSet
from workers.pipeline.visit import Visit
from workers.records import DropReason

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Reasons:
    cidr: DropReason
    country: DropReason
    user_agent: DropReason
    path: DropReason


_INSTANCE_REASONS = _Reasons(
    DropReason.INSTANCE_CIDR,
    DropReason.INSTANCE_COUNTRY,
    DropReason.INSTANCE_USER_AGENT,
    DropReason.INSTANCE_PATH,
)
_SITE_REASONS = _Reasons(
    DropReason.SITE_CIDR, DropReason.SITE_COUNTRY, DropReason.SITE_USER_AGENT, DropReason.SITE_PATH
)


def path_matches(prefix: str, path: str) -> bool:
    """``/admin`` matches ``/admin`` and ``/admin/x``, not ``/administrator``."""
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def _networks(rules: list[ExclusionRule]) -> NetworkSet:
    networks: list[IPNetwork] = []
    for rule in rules:
        try:
            networks.append(ipaddress.ip_network(rule.value, strict=False))
        except ValueError as error:  # the control plane validates; this guards a hand edit
            log.warning("exclusion rule %s ignored: %s", rule.id, error)
    return NetworkSet(networks)


class _ScopeRules:
    """The rules of one scope (the instance or one site), in the form the match compares.
    Values arrive normalised by the control plane (shared.control.exclusions)."""

    def __init__(self, rules: list[ExclusionRule], reasons: _Reasons) -> None:
        def values(kind: ExclusionKind) -> list[str]:
            return [rule.value for rule in rules if rule.kind == kind]

        self._networks = _networks([rule for rule in rules if rule.kind == ExclusionKind.CIDR])
        self._countries = frozenset(values(ExclusionKind.COUNTRY))
        self._agents = tuple(value.lower() for value in values(ExclusionKind.USER_AGENT))
        self._paths = tuple(values(ExclusionKind.PATH))
        self._reasons = reasons
        self.empty = not rules

    def match(self, visit: Visit) -> DropReason | None:
        row = visit.row
        if self.empty:
            return None
        if visit.ip is not None and self._networks and visit.ip in self._networks:
            return self._reasons.cidr
        if row.country and row.country in self._countries:
            return self._reasons.country
        if self._agents:
            agent = visit.envelope.user_agent.lower()
            if any(substring in agent for substring in self._agents):
                return self._reasons.user_agent
        if self._paths and any(path_matches(prefix, row.path) for prefix in self._paths):
            return self._reasons.path
        return None


@dataclass(frozen=True, slots=True)
class _RuleSet:
    instance: _ScopeRules
    sites: dict[str, _ScopeRules]


class Exclusions:
    def __init__(self) -> None:
        self._rules = _RuleSet(_ScopeRules([], _INSTANCE_REASONS), {})

    def update(self, rules: Iterable[ExclusionRule]) -> None:
        """Replace every rule in one assignment."""
        by_scope: defaultdict[str, list[ExclusionRule]] = defaultdict(list)
        for rule in rules:
            by_scope[rule.scope].append(rule)
        instance = _ScopeRules(by_scope.pop(INSTANCE_SCOPE, []), _INSTANCE_REASONS)
        sites = {scope: _ScopeRules(scoped, _SITE_REASONS) for scope, scoped in by_scope.items()}
        self._rules = _RuleSet(instance, sites)

    def check(self, visit: Visit) -> DropReason | None:
        rules = self._rules
        reason = rules.instance.match(visit)
        site_rules = rules.sites.get(visit.row.site_id)
        if reason is None and site_rules is not None:
            reason = site_rules.match(visit)
        return reason
