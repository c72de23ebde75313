"""Request-time policy as code: TOML rules whose ``when`` is a CEL expression.

Both the agent (FetchX509SVID, FetchJWTSVID, ValidateJWTSVID) and the server (every mint)
evaluate one :class:`Policy` per request against a document from :func:`build_input`::

    holder = PolicyHolder(Path("/etc/spiffe-py/policy.toml"), clock=SystemClock())
    doc = build_input(now=clock.now(), method=Method.FETCH_JWT_SVID, audiences=("payments",),
                      workload=WorkloadFacts(uid=1000), entry=EntryFacts(labels={"approved": "true"}))
    decision = holder.evaluate(doc)      # Decision(allowed, reason, rule, max_ttl)

Semantics (see docs/policy.md): rules run in file order; the first rule that is a matching
``deny`` or that raises decides (deny, with its reason or the error). Otherwise the request is
allowed with the smallest ``max_ttl`` among matching ``allow`` rules. An empty policy allows all.
A reload never drops every rule by accident: a file with no rules replaces a policy with rules
only when it says so with ``rule = []``.
"""

from __future__ import annotations

import enum
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spiffe_py.clock import Clock
from spiffe_py.errors import SpiffeError
from spiffe_py.selectors import Selector

# At run time ``cel`` is imported where a policy is compiled or evaluated: ``import cel`` also
# loads the package's own REPL (typer, rich, prompt_toolkit), about 0.25 s at every start of a
# process that has no policy.
if TYPE_CHECKING:
    import cel

MAX_POLICY_BYTES = 1 << 20
MAX_RULES = 1000
MAX_EXPRESSION_CHARS = 16 * 1024
_MAX_ERROR_CHARS = 300
_RULE_KEYS = frozenset({"name", "when", "effect", "reason", "max_ttl"})


class PolicyError(SpiffeError, ValueError):
    """A policy file could not be read, parsed or compiled; names the file and line."""

    def __init__(self, reason: str, *, source: str, line: int | None = None, rule: str | None = None) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.rule = rule
        where = source if line is None else f"{source}:{line}"
        what = "" if rule is None else f"rule {rule!r}: "
        super().__init__(f"policy: {where}: {what}{reason}")


class Effect(enum.StrEnum):
    """What a matching rule does."""

    ALLOW = "allow"
    DENY = "deny"


class Method(enum.StrEnum):
    """Values of ``request.method`` used by the agent and the server."""

    FETCH_X509_SVID = "FetchX509SVID"
    FETCH_JWT_SVID = "FetchJWTSVID"
    VALIDATE_JWT_SVID = "ValidateJWTSVID"
    MINT_X509_SVID = "MintX509SVID"
    MINT_JWT_SVID = "MintJWTSVID"
    AGENT_CSR = "AgentCSR"


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled ``[[rule]]`` table."""

    name: str
    when: str
    effect: Effect
    reason: str
    max_ttl: timedelta | None
    line: int | None
    program: cel.Program = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of a policy evaluation; ``max_ttl`` shortens the SVID when set."""

    allowed: bool
    reason: str
    rule: str | None = None
    max_ttl: timedelta | None = None


ALLOW_ALL = Decision(allowed=True, reason="no deny rule matched")
# The rule name of a quarantine refusal, and the entry label holding its reason (server and agent).
QUARANTINE_RULE = "quarantine"
QUARANTINE_REASON_LABEL = "quarantine.reason"


@dataclass(frozen=True, slots=True)
class Policy:
    """A compiled, immutable list of rules."""

    rules: tuple[Rule, ...]
    source: str = "<empty>"
    # True when the file said ``rule = []``: "no rules" on purpose, not an empty or cut-off file
    declared_empty: bool = False
    _uses: Mapping[str, frozenset[str] | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_uses", _field_uses(rule.when for rule in self.rules))

    def evaluate(self, document: Mapping[str, Any]) -> Decision:
        """Decide one request; evaluation errors and non-boolean results deny."""
        if not self.rules:
            return ALLOW_ALL
        import cel

        context = cel.Context(_project(document, self._uses))
        best: Rule | None = None
        best_ttl = timedelta.max
        for rule in self.rules:
            try:
                matched = rule.program.execute(context)
            except Exception as err:  # any CEL runtime failure must fail closed
                return _error_decision(rule, f"{type(err).__name__}: {err}")
            if not isinstance(matched, bool):
                return _error_decision(rule, f"when returned {type(matched).__name__}, not bool")
            if not matched:
                continue
            if rule.effect is Effect.DENY:
                return Decision(allowed=False, reason=rule.reason, rule=rule.name)
            if rule.max_ttl is not None and rule.max_ttl < best_ttl:
                best, best_ttl = rule, rule.max_ttl
        if best is None:
            return ALLOW_ALL
        return Decision(allowed=True, reason=best.reason, rule=best.name, max_ttl=best.max_ttl)


# --- input projection ------------------------------------------------------------------------
# Converting the document into CEL values costs about 1 µs per value and dominates evaluation,
# so only the parts the rules can reach are converted. The scan over-approximates: any mention
# of a root that is not a plain ``root.field`` access (or a mention inside a string) keeps more.

_ROOTS = ("workload", "request", "entry", "time", "task")
_ROOT_MENTION = re.compile(r"(?<![\w.])(" + "|".join(_ROOTS) + r")\b(?P<field>\s*\.\s*[A-Za-z_]\w*)?")


def _field_uses(expressions: Iterable[str]) -> dict[str, frozenset[str] | None]:
    """Root name -> the fields the expressions read (None: the whole root); unmentioned roots are absent."""
    fields: dict[str, set[str] | None] = {}
    for expression in expressions:
        for m in _ROOT_MENTION.finditer(expression):
            root, access = m.group(1), m.group("field")
            if access is None:
                fields[root] = None
            elif (known := fields.setdefault(root, set())) is not None:
                known.add(access.lstrip(" \t\r\n.").strip())
    return {root: None if f is None else frozenset(f) for root, f in fields.items()}


def _project(document: Mapping[str, Any], uses: Mapping[str, frozenset[str] | None]) -> dict[str, Any]:
    projected: dict[str, Any] = {}
    for root, value in document.items():
        if root in _ROOTS and root not in uses:
            continue  # no rule can reach it
        wanted = uses.get(root)
        if wanted is not None and isinstance(value, Mapping):
            projected[root] = {k: v for k, v in value.items() if k in wanted}
        else:
            projected[root] = value
    return projected


EMPTY_POLICY = Policy(rules=())


def _error_decision(rule: Rule, message: str) -> Decision:
    text = f"policy: rule {rule.name!r} failed to evaluate: {message}"
    return Decision(allowed=False, reason=text[:_MAX_ERROR_CHARS], rule=rule.name)


# --- loading -------------------------------------------------------------------------------

_RULE_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]\s*(#.*)?$")
_WHEN_KEY = re.compile(r"""^\s*(when|"when"|'when')\s*=\s*(?P<value>.*)$""")
_CEL_POSITION = re.compile(r"<input>:(\d+):(\d+)")
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def _triple_quote_state(line: str, open_delim: str | None) -> str | None:
    """Track whether a TOML multi-line string is still open after ``line``."""
    pos = 0
    while True:
        if open_delim is not None:
            end = line.find(open_delim, pos)
            if end < 0:
                return open_delim
            pos, open_delim = end + 3, None
            continue
        starts = [(i, d) for d in ('"""', "'''") if (i := line.find(d, pos)) >= 0]
        if not starts:
            return None
        start, open_delim = min(starts)
        pos = start + 3


@dataclass(slots=True)
class _RuleLines:
    header: int | None = None
    when: int | None = None


def _rule_lines(text: str) -> list[_RuleLines]:
    """For each ``[[rule]]`` table: its header line and the line where its CEL expression starts."""
    found: list[_RuleLines] = []
    open_delim: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if open_delim is None:
            if _RULE_HEADER.match(line):
                found.append(_RuleLines(header=number))
            elif (m := _WHEN_KEY.match(line)) and found and found[-1].when is None:
                value = m.group("value").strip()
                # TOML drops a newline right after an opening triple quote
                found[-1].when = number + (1 if value in ('"""', "'''") else 0)
        open_delim = _triple_quote_state(line, open_delim)
    return found


def _compile(expression: str, *, source: str, line: int | None, name: str) -> cel.Program:
    try:
        import cel

        return cel.compile(expression)
    except ValueError as err:
        message = str(err)
        pos = _CEL_POSITION.search(message)
        if pos is not None and line is not None:
            line += int(pos.group(1)) - 1
        detail = message.split("ERROR: ", 1)[-1].splitlines()[0]
        raise PolicyError(f"when does not compile: {detail}", source=source, line=line, rule=name) from err


def _parse_max_ttl(value: object, err: Callable[[str], PolicyError]) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise err(f"max_ttl must be a positive integer number of seconds: {value!r}")
    return timedelta(seconds=value)


def _parse_rule(raw: object, index: int, *, source: str, lines: _RuleLines) -> Rule:
    def err(reason: str, name: str | None = None) -> PolicyError:
        return PolicyError(reason, source=source, line=lines.header, rule=name)

    if not isinstance(raw, dict):
        raise err(f"rule #{index + 1} must be a table")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise err(f"rule #{index + 1} has unknown keys: {unknown!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise err(f"rule #{index + 1} needs a non-empty string 'name'")
    when = raw.get("when")
    if not isinstance(when, str) or not when.strip() or len(when) > MAX_EXPRESSION_CHARS:
        raise err(f"'when' must be a CEL expression of 1..{MAX_EXPRESSION_CHARS} characters", name)
    try:
        effect = Effect(str(raw.get("effect")))
    except ValueError:
        raise err(f"'effect' must be 'allow' or 'deny': {raw.get('effect')!r}", name) from None
    reason = raw.get("reason", "")
    if not isinstance(reason, str) or (effect is Effect.DENY and not reason.strip()):
        raise err("'reason' must be a string (non-empty for deny rules)", name)
    max_ttl = _parse_max_ttl(raw.get("max_ttl"), lambda m: err(m, name))
    if max_ttl is not None and effect is Effect.DENY:
        raise err("'max_ttl' applies only to allow rules", name)
    program = _compile(when, source=source, line=lines.when, name=name)
    return Rule(name=name, when=when, effect=effect, reason=reason, max_ttl=max_ttl, line=lines.when, program=program)


def parse_policy(text: str, source_name: str = "<string>") -> Policy:
    """Parse and compile TOML policy text; every ``when`` is compiled once here.

    Raises:
        PolicyError: bad TOML, a malformed rule or a ``when`` that does not compile.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        pos = _TOML_POSITION.search(str(err))
        line = int(pos.group(1)) if pos else None
        raise PolicyError(f"invalid TOML: {err}", source=source_name, line=line) from err
    unknown = sorted(set(data) - {"rule"})
    if unknown:
        raise PolicyError(f"unknown top-level keys: {unknown!r}", source=source_name)
    declared_empty = data.get("rule") == []
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list) or len(raw_rules) > MAX_RULES:
        raise PolicyError(f"'rule' must be an array of at most {MAX_RULES} tables", source=source_name)
    # tomllib keeps no positions, so a light scan of the text maps each rule to its lines
    lines = _rule_lines(text)
    lines += [_RuleLines() for _ in range(len(raw_rules) - len(lines))]
    rules = tuple(
        _parse_rule(raw, i, source=source_name, lines=lines[i]) for i, raw in enumerate(raw_rules)
    )
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PolicyError(f"duplicate rule names: {duplicates!r}", source=source_name)
    return Policy(rules=rules, source=source_name, declared_empty=declared_empty)


def load_policy(path: Path) -> Policy:
    """Read a policy file (at most 1 MiB of UTF-8), then :func:`parse_policy` it."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as err:
        raise PolicyError(f"cannot read: {err.strerror}", source=str(path)) from err
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(f"file is larger than {MAX_POLICY_BYTES} bytes", source=str(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PolicyError("file is not valid UTF-8", source=str(path)) from err
    return parse_policy(text, str(path))


# --- hot reload ----------------------------------------------------------------------------

_FileSignature = tuple[int, int, int, int]


def _signature(path: Path) -> _FileSignature:
    try:
        st = path.stat()
    except OSError as err:
        raise PolicyError(f"cannot read: {err.strerror}", source=str(path)) from err
    if not stat.S_ISREG(st.st_mode):
        raise PolicyError("not a regular file", source=str(path))
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PolicyHolder:
    """Owns the policy in force and reloads its file when it changes.

    The file is stat'ed on access at most once per ``check_interval`` (by the injected clock).
    A changed file that fails to load leaves the previous policy in force and sets
    :attr:`last_error`; the same broken version is not retried until the file changes again.
    So does a file with no rules (empty or cut off before its first ``[[rule]]``) while the
    policy in force has rules, unless it declares ``rule = []``.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        check_interval: timedelta = timedelta(seconds=1),
        on_reload: Callable[[Policy], None] | None = None,
        on_error: Callable[[PolicyError], None] | None = None,
    ) -> None:
        self.path = path
        self._clock = clock
        self._interval = check_interval
        self._on_reload = on_reload
        self._on_error = on_error
        self._signature: _FileSignature | None = _signature(path)
        self._policy = load_policy(path)
        self._checked_at = clock.now()
        self.last_error: PolicyError | None = None
        self.generation = 1

    @property
    def policy(self) -> Policy:
        """The policy in force, after a reload check if one is due."""
        now = self._clock.now()
        if now - self._checked_at >= self._interval:
            self._checked_at = now
            self.check()
        return self._policy

    def evaluate(self, document: Mapping[str, Any]) -> Decision:
        """Evaluate ``document`` against the current policy."""
        return self.policy.evaluate(document)

    def check(self) -> bool:
        """Reload now if the file changed; True if a new policy took effect."""
        try:
            sig = _signature(self.path)
        except PolicyError as err:
            if self._signature is not None:  # report a vanished file once, not on every check
                self._signature = None
                self._fail(err)
            return False
        if sig == self._signature:
            return False
        try:
            policy = load_policy(self.path)
            after = _signature(self.path)
        except PolicyError as err:
            self._signature = sig
            self._fail(err)
            return False
        if after != sig:
            return False  # written to while it was read: look again at the next check
        self._signature = sig
        if not policy.rules and self._policy.rules and not policy.declared_empty:
            # an empty, truncated or cut-off file must not silently become "allow everything"
            self._fail(PolicyError(
                f"the file has no rules but the policy in force has {len(self._policy.rules)}; "
                "write 'rule = []' to remove every rule on purpose", source=str(self.path)))
            return False
        self._policy, self.last_error = policy, None
        self.generation += 1
        if self._on_reload is not None:
            self._on_reload(policy)
        return True

    def _fail(self, err: PolicyError) -> None:
        self.last_error = err
        if self._on_error is not None:
            self._on_error(err)


# --- the input document --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkloadFacts:
    """What attestation learned about the caller; ``None`` fields are left out of the document."""

    spiffe_id: str | None = None
    selectors: Sequence[Selector | str] = ()
    pid: int | None = None
    uid: int | None = None
    gid: int | None = None
    path: str | None = None
    sha256: str | None = None
    container_image: str | None = None
    container_labels: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class EntryFacts:
    """The registration entry the SVID is minted for."""

    id: str | None = None
    spiffe_id: str | None = None
    x509_svid_ttl: int | None = None
    jwt_svid_ttl: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _workload_doc(w: WorkloadFacts) -> dict[str, Any]:
    doc = _present({
        "spiffe_id": w.spiffe_id, "pid": w.pid, "uid": w.uid, "gid": w.gid,
        "path": w.path, "sha256": w.sha256,
    })
    doc["selectors"] = [str(s) for s in w.selectors]
    if w.container_image is not None or w.container_labels is not None:
        doc["container"] = _present({
            "image": w.container_image,
            "labels": None if w.container_labels is None else dict(w.container_labels),
        })
    return doc


def _entry_doc(e: EntryFacts) -> dict[str, Any]:
    doc = _present({
        "id": e.id, "spiffe_id": e.spiffe_id, "x509_svid_ttl": e.x509_svid_ttl, "jwt_svid_ttl": e.jwt_svid_ttl,
    })
    doc["labels"] = dict(e.labels)
    return doc


def _task_doc(now: datetime, started_at: datetime | None, expires_at: datetime | None) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if started_at is not None:
        doc["started_at"] = started_at
        doc["age"] = now - started_at
    if expires_at is not None:
        doc["expires_at"] = expires_at
    return doc


def build_input(
    *,
    now: datetime,
    method: str,
    workload: WorkloadFacts | None = None,
    entry: EntryFacts | None = None,
    audiences: Iterable[str] = (),
    requested_spiffe_id: str | None = None,
    validator_audience: str | None = None,
    task_started_at: datetime | None = None,
    task_expires_at: datetime | None = None,
) -> dict[str, Any]:
    """Build the CEL input document (fields and types in docs/policy.md)."""
    if now.tzinfo is None:
        raise ValueError("policy: now must be timezone-aware")
    now = now.astimezone(UTC)
    request = _present({
        "method": str(method), "spiffe_id": requested_spiffe_id, "validator_audience": validator_audience,
    })
    request["audiences"] = list(audiences)
    return {
        "workload": _workload_doc(workload or WorkloadFacts()),
        "request": request,
        "entry": _entry_doc(entry or EntryFacts()),
        # CEL getDayOfWeek() convention: 0 = Sunday
        "time": {"now": now, "hour": now.hour, "weekday": (now.weekday() + 1) % 7},
        "task": _task_doc(now, task_started_at, task_expires_at),
    }


__all__ = [
    "ALLOW_ALL",
    "EMPTY_POLICY",
    "QUARANTINE_REASON_LABEL",
    "QUARANTINE_RULE",
    "Decision",
    "Effect",
    "EntryFacts",
    "Method",
    "Policy",
    "PolicyError",
    "PolicyHolder",
    "Rule",
    "WorkloadFacts",
    "build_input",
    "load_policy",
    "parse_policy",
]
