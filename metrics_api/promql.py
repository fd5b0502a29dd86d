"""PromQL scoping at the syntax-tree level: parse, add the tenant matcher to every selector, render, verify.

The parser is `promql-parser`; its own `str()` does not escape label values (a value holding a quote would
re-render as different PromQL), so this module renders the tree itself with Go-compatible string escaping and
then re-parses its own output to check that every selector carries the enforced matchers.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import promql_parser as pp


class QueryError(ValueError):
    """The query is not valid PromQL, or uses syntax this Prometheus does not accept (HTTP 400)."""


class ScopeError(PermissionError):
    """The query cannot be confined to the caller's tenants or roles (HTTP 403)."""


@dataclass(frozen=True)
class Policy:
    """What every selector must carry, and which metric names are off limits.

    `enforced`: (label, op, value) triples appended to every selector (op is "=" or "=~").
    `denied_names`: fully anchored regexes of metric names this caller may not read.
    `max_range_seconds`: the longest range selector, subquery range, or offset a query may use.
    """

    enforced: tuple[tuple[str, str, str], ...] = ()
    denied_names: tuple[str, ...] = ()
    max_range_seconds: float = math.inf


def quote(value: str) -> str:
    """A PromQL double-quoted string literal (JSON escaping is a subset of Go's, which PromQL uses)."""
    return json.dumps(value, ensure_ascii=False)


def regex_escape(value: str) -> str:
    """Escape RE2 metacharacters (tenant names are validated, but never trust that alone)."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", value)


def tenant_matcher(label: str, tenants: Sequence[str]) -> tuple[str, str, str]:
    """`tenant="a"` for one tenant, `tenant=~"a|b"` for several."""
    if len(tenants) == 1:
        return (label, "=", tenants[0])
    return (label, "=~", "|".join(regex_escape(t) for t in sorted(tenants)))


_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def _duration(delta: timedelta) -> str:
    if delta < timedelta(0):
        return "-" + pp.display_duration(-delta)
    return pp.display_duration(delta)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _at(at: pp.AtModifier | None) -> str:
    if at is None:
        return ""
    kind = str(at.type)
    if kind.endswith("Start"):
        return " @ start()"
    if kind.endswith("End"):
        return " @ end()"
    assert at.at is not None
    return f" @ {at.at.timestamp():.3f}"


def _offset(offset: timedelta | None, policy: Policy | None) -> str:
    if not offset:
        return ""
    if policy is not None:
        _check_range(abs(offset.total_seconds()), "offset", policy)
    return f" offset {_duration(offset)}"


def _matcher(op: pp.MatchOp, name: str, value: str) -> str:
    return f"{name}{_OPS[str(op)]}{quote(value)}"


def _selector(sel: pp.VectorSelector, policy: Policy | None) -> str:
    parts = [_matcher(m.op, m.name, m.value) for m in sel.matchers.matchers]
    if policy is not None:
        parts += _policy_matchers(sel, policy)
    return f"{sel.name or ''}{{{','.join(parts)}}}"


def _labels(labels: Sequence[str]) -> str:
    return "(" + ", ".join(labels) + ")"


def _bin_modifier(node: pp.BinaryExpr) -> str:
    mod = node.modifier
    if mod is None:
        return ""
    out = " bool" if mod.return_bool else ""
    if mod.matching is not None:
        word = "on" if str(mod.matching.type).endswith("Include") else "ignoring"
        out += f" {word}{_labels(mod.matching.labels)}"
    card = str(mod.card)
    if card.endswith("ManyToOne"):
        out += f" group_left{_labels(mod.group_labels or [])}"
    elif card.endswith("OneToMany"):
        out += f" group_right{_labels(mod.group_labels or [])}"
    return out


def _operand(node: pp.Expr, policy: Policy | None) -> str:
    # Parentheses that mirror the tree keep precedence exact whatever the operators are.
    text = render(node, policy)
    return f"({text})" if isinstance(node, pp.BinaryExpr | pp.UnaryExpr) else text


def render(node: pp.Expr, policy: Policy | None = None) -> str:
    """PromQL text for a parsed tree, every string escaped; with a policy, every selector is scoped by it."""
    if isinstance(node, pp.VectorSelector):
        return _selector(node, policy) + _offset(node.offset, policy) + _at(node.at)
    if isinstance(node, pp.MatrixSelector):
        vs = node.vector_selector
        if policy is not None:
            _check_range(node.range.total_seconds(), "range selector", policy)
        return f"{_selector(vs, policy)}[{_duration(node.range)}]{_offset(vs.offset, policy)}{_at(vs.at)}"
    if isinstance(node, pp.NumberLiteral):
        return _number(node.val)
    if isinstance(node, pp.StringLiteral):
        return quote(node.val)
    if isinstance(node, pp.ParenExpr):
        return f"({render(node.expr, policy)})"
    if isinstance(node, pp.UnaryExpr):
        return f"-{_operand(node.expr, policy)}"
    if isinstance(node, pp.BinaryExpr):
        return f"{_operand(node.lhs, policy)} {node.op}{_bin_modifier(node)} {_operand(node.rhs, policy)}"
    if isinstance(node, pp.Call):
        return f"{node.func.name}({', '.join(render(a, policy) for a in node.args)})"
    if isinstance(node, pp.AggregateExpr):
        mod = ""
        if node.modifier is not None:
            word = "by" if str(node.modifier.type).endswith("By") else "without"
            mod = f" {word} {_labels(node.modifier.labels)} "
        inner = render(node.expr, policy)
        args = inner if node.param is None else f"{render(node.param, policy)}, {inner}"
        return f"{node.op}{mod}({args})"
    if isinstance(node, pp.SubqueryExpr):
        assert node.range is not None
        if policy is not None:
            _check_range(node.range.total_seconds(), "subquery range", policy)
        step = _duration(node.step) if node.step else ""
        body = _operand(node.expr, policy)
        return f"{body}[{_duration(node.range)}:{step}]{_offset(node.offset, policy)}{_at(node.at)}"
    raise ScopeError(f"query contains a {type(node).__name__}, which this API cannot scope")


def parse(query: str) -> pp.Expr:
    """Parse PromQL, turning the parser's errors into QueryError (a 400, never a 500)."""
    try:
        return pp.parse(query)
    except (ValueError, TypeError, OverflowError) as exc:
        raise QueryError(f"invalid PromQL: {exc}") from None
    except BaseException as exc:  # the Rust extension can raise PanicException for odd input
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise QueryError("invalid PromQL") from None


def metric_name(sel: pp.VectorSelector) -> str | None:
    """The exact metric name a selector reads, if it names one."""
    if sel.name:
        return sel.name
    for m in sel.matchers.matchers:
        if m.name == "__name__" and str(m.op) == "MatchOp.Equal":
            return m.value
    return None


def _policy_matchers(sel: pp.VectorSelector, policy: Policy) -> list[str]:
    """The matchers a policy appends to one selector, after refusing restricted metric names."""
    if sel.matchers.or_matchers:
        raise QueryError("'or' inside label matchers is not supported by this Prometheus")
    name = metric_name(sel)
    extra = [f"{label}{op}{quote(value)}" for label, op, value in policy.enforced]
    if name is not None:
        for pattern in policy.denied_names:
            if re.fullmatch(pattern, name):
                raise ScopeError(f"metric {name} is restricted to other roles")
    elif policy.denied_names:
        # The selector could match any name: exclude the restricted ones explicitly.
        extra.append(f"__name__!~{quote(denied_regex(policy))}")
    return extra


def denied_regex(policy: Policy) -> str:
    return "|".join(f"(?:{p})" for p in policy.denied_names)


def _check_range(seconds: float, what: str, policy: Policy) -> None:
    if seconds > policy.max_range_seconds:
        raise QueryError(f"{what} of {seconds:.0f}s exceeds the limit of {policy.max_range_seconds:.0f}s")


def selectors(node: pp.Expr) -> list[pp.VectorSelector]:
    """Every vector selector in a tree (including those inside range selectors)."""
    found: list[pp.VectorSelector] = []

    def visit(n: pp.Expr) -> bool:
        if isinstance(n, pp.MatrixSelector):
            found.append(n.vector_selector)
        elif isinstance(n, pp.VectorSelector):
            found.append(n)
        return True

    pp.walk(node, pre_visit=visit)
    return found


def _verify(text: str, policy: Policy, expected_selectors: int) -> None:
    """Re-parse the rendered query: same text again, same number of selectors, each carrying every matcher."""
    try:
        tree = pp.parse(text)
    except Exception:
        raise ScopeError("query cannot be scoped (it does not re-render as valid PromQL)") from None
    if render(tree) != text:
        raise ScopeError("query cannot be scoped (ambiguous rendering)")
    found = selectors(tree)
    if len(found) != expected_selectors:
        raise ScopeError("query cannot be scoped (selector count changed)")
    for sel in found:
        present = {(m.name, _OPS[str(m.op)], m.value) for m in sel.matchers.matchers}
        if not all(matcher in present for matcher in policy.enforced):
            raise ScopeError("query cannot be scoped to the caller's tenants")


# Long matcher values (a tenant's VM id list in vm_id mode) are verified as a placeholder and put in last:
# re-parsing means compiling the regex, which for thousands of ids costs the parser hundreds of milliseconds.
_PLACEHOLDER = f"novacron-scope-{secrets.token_hex(16)}"
_LONG_VALUE = 256


def scope_query(query: str, policy: Policy) -> str:
    """The query with the policy's matchers on every selector; QueryError or ScopeError otherwise."""
    if _PLACEHOLDER in query:
        raise ScopeError("query cannot be scoped")
    tree = parse(query)
    count = len(selectors(tree))
    long_values = {
        f"{_PLACEHOLDER}-{i}": value
        for i, (_, _, value) in enumerate(policy.enforced)
        if len(value) > _LONG_VALUE
    }
    if not long_values:
        text = render(tree, policy)
        _verify(text, policy, count)
        return text
    stand_in = {value: key for key, value in long_values.items()}
    light = replace(
        policy,
        enforced=tuple((label, op, stand_in.get(value, value)) for label, op, value in policy.enforced),
    )
    text = render(tree, light)
    _verify(text, light, count)
    # The placeholders are unguessable and absent from the input, so each occurrence is one we rendered.
    for key, value in long_values.items():
        text = text.replace(quote(key), quote(value))
    return text


def scope_selector(selector: str, policy: Policy) -> str:
    """A series selector (`match[]`) scoped the same way; anything but a plain selector is a 400."""
    tree = parse(selector)
    if not isinstance(tree, pp.VectorSelector):
        raise QueryError(f"match[] must be a series selector, got {type(tree).__name__}")
    return scope_query(selector, policy)


def default_selector(policy: Policy) -> str | None:
    """The match[] to use when a caller gave none to series/labels endpoints (None: no restriction needed)."""
    if not policy.enforced and not policy.denied_names:
        return None
    parts = [f"{label}{op}{quote(value)}" for label, op, value in policy.enforced]
    if policy.denied_names:
        parts.append('__name__=~".+"')
        parts.append(f"__name__!~{quote(denied_regex(policy))}")
    return "{" + ",".join(parts) + "}"
