"""Log lines -> log templates, with Drain3 underneath.

Three stages, all generic (no per-system settings):

1. **Masking** (Drain3 masking instructions): values that are variables by their *shape* are replaced by
   typed masks before Drain sees the line: URLs, paths, UUIDs, MACs, dates and times, IPs, block ids, hex
   ids, numbers with units, ``key=value`` values, booleans, and every token that contains a digit.
2. **Drain** (``drain3.TemplateMiner``) groups the masked lines. After masking, the literal words that are
   left are almost always template constants (``VM Started`` vs ``VM Paused``, ``startup`` vs ``shutdown``),
   so the similarity threshold is high: Drain only generalises a literal word in long messages.
3. **Sibling merge** (:class:`TemplateGroups`): Drain clusters are joined into one template when
   (a) their templates are equal once runs of masks are collapsed (a value that spans a varying number of
   tokens, e.g. ``5 KB`` vs ``5 KB (5120 B)``), or (b) they differ in exactly one literal word and at least
   ``sibling_min_values`` (5) distinct values were seen in that slot (a slot that took many different words,
   such as a user name, is a variable; one that took a handful, such as a state, is not). The first token
   is never such a slot: it usually names the event. Once a slot is known to be variable, it is masked
   (``<VAR>``) in later lines, so new values reuse one Drain cluster and the decision is persisted with
   Drain's templates.

Template ids are ``T`` + the smallest Drain cluster id of the group. Drain cluster ids are part of Drain3's
persisted state and the grouping is a pure function of the clusters, so ids survive restarts.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drain3 import TemplateMiner
from drain3.masking import AbstractMaskingInstruction, MaskingInstruction
from drain3.persistence_handler import PersistenceHandler
from drain3.template_miner_config import TemplateMinerConfig

# -- masking ---------------------------------------------------------------------------------------

_L = r"(?<![A-Za-z0-9_])"  # left edge of a value: not glued to a word character
_R = r"(?![A-Za-z0-9_])"  # right edge
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?"
_UNIT = r"(?:[KMGTP]i?B|B|bytes?|[kKMG]?bps|ms|us|ns|s|secs?|seconds?|mins?|minutes?|h|hrs?|hours?|days?|%)"

_DIGITS = tuple("0123456789")

# A code location names the statement that logged the line, so it is template text, not a value: a qualified
# class and its line ("t.s.TravelServiceImpl#532", as Logback's "%logger{0}#%line" patterns print it) or a
# source file and its line ("Main.java:42", "handlers.py:118"). Masking it as a number merged every statement
# of a service that logs the same words into one template, and a statement that stops being logged (an aborted
# handler) or starts (a new error path) could not be told from the rest.
_SOURCE_SUFFIX = ("java", "kt", "scala", "groovy", "py", "go", "rb", "js", "ts", "cs", "rs", "php", "swift",
                  "c", "cc", "cpp", "h", "hpp", "ex", "erl")
_SOURCE_FILE_LINE = r"\.(?:" + "|".join(_SOURCE_SUFFIX) + r"):\d{1,6}"
# Where a code location ends its whitespace token, trailing punctuation aside: "<letter or ]>#<line>" in a token
# holding a dot (a qualified class), or "<file>.<source suffix>:<line>" ("com.shop.Cart.add(Cart.java:118)", a
# stack frame, is kept whole). Fixed-width tests at each position, so a long token costs linear time.
_CODE_LOCATION_END = r"(?:[A-Za-z_$\]]#\d{1,6}|" + _SOURCE_FILE_LINE + r")[)\]}\"',;:.]*(?:\s|$)"
_NOT_ENDING_IN_CODE_LOCATION = r"(?!(?=[^\s.]*\.)\S*?" + _CODE_LOCATION_END + ")"
# A host and port is a value, a source file and its line is not.
_NOT_SOURCE_FILE_LINE = r"(?![\w\-]*(?:\.[\w\-]+)*" + _SOURCE_FILE_LINE + ")"
_NOT_AFTER_SOURCE_FILE = "".join(rf"(?<!\.{suffix}:)" for suffix in _SOURCE_SUFFIX)


@dataclass(frozen=True)
class MaskRule:
    """One masking step: matches of ``pattern`` become ``<name>``.

    ``hints``: substrings of which the line must contain one for the rule to run (a cheap ``in`` test that
    saves the regex scan on most lines); empty means always run.
    """

    pattern: str
    name: str
    hints: tuple[str, ...] = ()


#: Applied in this order. Order matters: structured values first (a URL contains a path, a path may contain
#: a date, a date contains numbers), the catch-all digit rule last.
DEFAULT_MASKING: tuple[MaskRule, ...] = (
    MaskRule(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]+", "URL", ("://",)),
    # Unix paths: relative ones ("./x"), two or more segments, or one segment holding a digit; with query.
    MaskRule(
        r"(?<![\w/.~-])(?:\.{1,2}(?:/[\w.\-@~%+:$#]+)+|~?(?:/[\w.\-@~%+:$#]*){2,}"
        r"|/[\w.\-@~%+$#]*\d[\w.\-@~%+$#]*)(?:\?[^\s\"'<>]*)?",
        "PATH",
        ("/",),
    ),
    MaskRule(r"(?<![\w/])[A-Za-z]:\\[^\s\"'<>]*", "PATH", (":\\",)),  # Windows paths
    MaskRule(_L + r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}" + _R, "UUID", ("-",)),
    MaskRule(r"(?<![\w.:/])(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}" + _R, "MAC", (":", "-")),
    # "Fri Dec 10 19:02:14 EST 2004", "Aug 4 2005", "Jul 12 10:00:01"
    MaskRule(
        _L + rf"(?:{_WEEKDAY}\s+)?{_MONTH}\s+\d{{1,2}}(?:,?\s+\d{{4}})?(?:\s+\d{{1,2}}:\d{{2}}"
        r"(?::\d{2}(?:[.,]\d+)?)?)?(?:\s+[A-Z]{2,5})?(?:\s+\d{4})?" + _R,
        "DATE",
        _DIGITS,
    ),
    MaskRule(
        _L + r"\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?" + _R,
        "DATE",
        ("-",),
    ),
    MaskRule(_L + r"\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?" + _R, "TIME", (":",)),
    MaskRule(_L + r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?" + _R, "IP", (".",)),
    # host:port endpoints ("proxy.example.org:5070"): the host is part of the value.
    MaskRule(r"(?<![\w.\-/])" + _NOT_SOURCE_FILE_LINE + r"[A-Za-z0-9][\w\-]*(?:\.[\w\-]+)+:\d{1,5}" + _R, "HOST",
             (":",)),
    MaskRule(_L + r"blk_-?\d+" + _R, "BLK", ("blk_",)),
    MaskRule(_L + r"0[xX][0-9a-fA-F]+" + _R, "HEX", ("0x", "0X")),
    # Hex ids/hashes: 8+ hex digits with at least one digit and one letter (plain words never qualify).
    MaskRule(_L + r"(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}" + _R, "HEX", _DIGITS),
    # A number and its unit are one value: "5.2 KB" and "384 B" must not differ in a literal token.
    MaskRule(r"(?<![\w.])[-+]?\d+(?:\.\d+)?\s?" + _UNIT + _R, "SIZE", _DIGITS),
    # The value of key=value, maybe quoted.
    MaskRule(r"(?<==)(?:\"[^\"]*\"|'[^']*'|[^\s,;&=\])}]+)", "VAL", ("=",)),
    MaskRule(r"(?<=\.\.)[-+]?\d[\w.]*", "NUM", ("..",)),  # the value after dot leaders: "threshold.......0"
    # "key:123": keep the key, mask the value (not the line of a source file: "Main.java:42" names a statement)
    MaskRule(r"(?<=[A-Za-z]:)" + _NOT_AFTER_SOURCE_FILE + r"[-+]?\d[\w.]*" + _R, "NUM", (":",)),
    MaskRule(
        r"(?<![^\s(\[{\"'=:,])(?:true|false|True|False|null|None)(?![^\s)\]}\"',;.])",
        "BOOL",
        ("true", "false", "True", "False", "null", "None"),
    ),
    # Catch-all: a whitespace token holding a digit is a variable (its edge punctuation is kept).
    # Code locations are not values: see _CODE_LOCATION.
    MaskRule(r"(?<![^\s(\[{\"'=])(?![(\[{\"'])" + _NOT_ENDING_IN_CODE_LOCATION
             + r"\S*?\d\S*?(?=[)\]}\"',;:.]*(?:\s|$))", "NUM", _DIGITS),
)

_MASK_TOKEN = re.compile(r"<[A-Z]+>|<\*>")
_LETTER = re.compile(r"[A-Za-z]")
_SENTINEL = "\x00"  # stands for a mask while collapsing, so that "<" and ">" count as punctuation
# A run of masks separated only by blanks and separator punctuation, with the separators around it, is one
# value ("<*> (<*>)", "<*>:<*>", "<<*>"). Not "*" or "!": a "****" between numbers is template text.
_SEP = r"""[,;:./\\()\[\]{}<>'"|=#@+\-]"""
_MASK_RUN = re.compile(rf"{_SEP}*\x00(?:(?:\s|{_SEP})*\x00)*{_SEP}*")


class _HintedMasking(MaskingInstruction):  # type: ignore[misc]  # drain3 ships no type hints
    """A Drain3 regex masking instruction that skips lines holding none of its rule's hints."""

    def __init__(self, rule: MaskRule) -> None:
        super().__init__(rule.pattern, rule.name)
        self.hints = re.compile("|".join(map(re.escape, rule.hints))) if rule.hints else None

    def mask(self, content: str, mask_prefix: str, mask_suffix: str) -> str:
        if self.hints is not None and self.hints.search(content) is None:
            return content
        return str(super().mask(content, mask_prefix, mask_suffix))


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogTemplateConfig:
    """The one template-mining configuration (defaults are the generic setting; no per-system variants)."""

    #: Drain similarity threshold. High on purpose: masking already removed the values, and the literal
    #: words left are template constants unless the sibling merge finds evidence otherwise.
    sim_threshold: float = 0.95
    #: Drain prefix-tree depth (root, token count, then depth-2 leading tokens).
    depth: int = 4
    max_children: int = 100
    #: Bound on Drain clusters (LRU eviction beyond it), so memory stays bounded on unbounded streams.
    max_clusters: int = 10_000
    extra_delimiters: tuple[str, ...] = ()
    masking: tuple[MaskRule, ...] = DEFAULT_MASKING
    #: Clusters differing in one literal word merge once the slot took this many distinct values (0: never).
    #: Five: state-like slots seen in practice take two to four words (VM Started/Paused/Resumed/Stopped).
    sibling_min_values: int = 5
    snapshot_interval_minutes: int = 5
    compress_state: bool = True
    #: Also extract the parameter values of each line (costs a regex match per line).
    extract_params: bool = False

    def to_drain3(self) -> TemplateMinerConfig:
        """An explicit Drain3 config (without one, Drain3 silently reads ``drain3.ini`` from the cwd)."""
        cfg = TemplateMinerConfig()
        cfg.drain_sim_th = self.sim_threshold
        cfg.drain_depth = self.depth
        cfg.drain_max_children = self.max_children
        cfg.drain_max_clusters = self.max_clusters
        cfg.drain_extra_delimiters = list(self.extra_delimiters)
        cfg.masking_instructions = [_HintedMasking(rule) for rule in self.masking]
        cfg.mask_prefix, cfg.mask_suffix = "<", ">"
        cfg.snapshot_interval_minutes = self.snapshot_interval_minutes
        cfg.snapshot_compress_state = self.compress_state
        cfg.parametrize_numeric_tokens = True
        cfg.profiling_enabled = False
        return cfg


@dataclass(frozen=True)
class TemplateMatch:
    """The template a log line belongs to."""

    template_id: str
    template: str
    is_new: bool
    #: The Drain cluster the line fell into (several clusters may form one template).
    cluster_id: int
    #: Parameter values, only when ``LogTemplateConfig.extract_params`` is set.
    params: tuple[str, ...] = ()


# -- persistence -----------------------------------------------------------------------------------


class FileTemplateState(PersistenceHandler):  # type: ignore[misc]  # drain3 ships no type hints
    """Drain3 state in one file, replaced atomically.

    Drain3's own ``FilePersistence`` writes the file in place, so a crash mid-write leaves a truncated
    snapshot that fails to load; here the snapshot goes to a temporary file in the same directory, is
    flushed to disk, and then renamed over the old one (``os.replace`` is atomic on POSIX and Windows).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def save_state(self, state: bytes) -> None:
        """Write ``state`` atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(state)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_directory(self.path.parent)

    def load_state(self) -> bytes | None:
        """The last saved state, or None when nothing was saved yet."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not support fsync on directories
    finally:
        os.close(fd)


# -- grouping of Drain clusters --------------------------------------------------------------------


def _canonical(template: str) -> list[str]:
    """Template tokens with every typed mask (``<NUM>``, ``<IP>``...) turned into ``<*>``."""
    return [_MASK_TOKEN.sub("<*>", tok) for tok in template.split()]


def _collapse(tokens: Sequence[str]) -> str:
    """The template with each run of masks (and the punctuation around it) reduced to one ``<*>``."""
    joined = " ".join(tokens).replace("<*>", _SENTINEL)
    return _MASK_RUN.sub(_SENTINEL, joined).replace(_SENTINEL, "<*>")


def _chained_hashes(tokens: Sequence[str]) -> tuple[list[int], list[int]]:
    """For each position i: a hash of the tokens before i and one of the tokens after i, in O(n)."""
    before = [0] * (len(tokens) + 1)
    after = [0] * (len(tokens) + 1)
    for i, tok in enumerate(tokens):
        before[i + 1] = hash((before[i], tok))
    for i in range(len(tokens) - 1, 0, -1):
        after[i - 1] = hash((after[i], tokens[i]))
    return before, after


def _is_literal(token: str) -> bool:
    """A token that is a word (has a letter) and holds no mask."""
    return "<*>" not in token and _LETTER.search(token) is not None


VARIABLE_SLOT_MASK = "VAR"  # the mask written into lines (and so into Drain templates) for learned variable slots
_VARIABLE_TOKEN = f"<{VARIABLE_SLOT_MASK}>"


@dataclass
class _Key:
    """The clusters indexed under one key, and what they hold in the key's slot."""

    members: set[int] = field(default_factory=set)
    literals: int = 0  # members with a literal word in the slot
    proven: int = 0  # members with the learned-variable mask in the slot


class TemplateGroups:
    """Joins Drain clusters into templates (see the module docstring), incrementally.

    Every cluster is indexed under a few keys. The collapsed-template key links its clusters as soon as it
    has two. A one-slot key (the template with one position left out) links its clusters once the slot
    holds at least ``min_values`` distinct values: each literal word counts, and clusters with a mask in the
    slot count once together (``user root``, ``user admin`` ... and ``user admin1`` are one template). A
    template is a connected component; its representative is its smallest cluster id. Components are
    cached until the next change.

    Once a slot is linked, :meth:`mask_variable_slot` masks it in new lines (``<VAR>``), so that a new user
    name reuses one Drain cluster instead of creating one per name, and the decision is written into Drain's
    persisted templates: a cluster with ``<VAR>`` in a slot keeps that slot linked.
    """

    def __init__(self, min_values: int, delimiters: Sequence[str] = ()) -> None:
        self.min_values = min_values
        self.delimiters = tuple(delimiters)  # Drain's extra delimiters: tokens must be split the same way
        self._tokens: dict[int, list[str]] = {}
        self._keys: dict[int, list[tuple[Hashable, int]]] = {}  # cluster id -> (key, position or -1)
        self._index: dict[Hashable, _Key] = {}
        self._linked_slots: dict[int, int] = defaultdict(int)  # token count -> linked slot keys of that length
        self._rep: dict[int, int] = {}  # cluster id -> representative, valid until the next change
        self._text: dict[int, str] = {}  # representative -> template text, same lifetime

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, cluster_id: object) -> bool:
        return cluster_id in self._tokens

    def cluster_ids(self) -> list[int]:
        """All indexed cluster ids."""
        return list(self._tokens)

    def update(self, cluster_id: int, template: str) -> None:
        """Index (or re-index) a cluster under its current Drain template."""
        self.remove(cluster_id)
        raw = template.split()
        tokens = _canonical(template)
        keys: list[tuple[Hashable, int]] = [(("run", _collapse(tokens)), -1)]
        literal = [_is_literal(tok) for tok in tokens]
        # One-slot keys: never the first token (it usually names the event), and only when another literal
        # word is left to anchor the template. hash() keeps keys small; they never leave the process.
        if self.min_values > 0 and sum(literal) >= 1:
            before, after = _chained_hashes(tokens)
            for i in range(1, len(tokens)):
                if (literal[i] and sum(literal) >= 2) or tokens[i] == "<*>":
                    keys.append((("slot", len(tokens), i, before[i], after[i]), i))
        for key, i in keys:
            was_linked = self._linked(key)
            entry = self._index.setdefault(key, _Key())
            entry.members.add(cluster_id)
            entry.literals += i >= 0 and literal[i]
            entry.proven += i >= 0 and raw[i] == _VARIABLE_TOKEN
            self._count_linked_slot(key, was_linked)
        self._tokens[cluster_id] = raw
        self._keys[cluster_id] = keys
        self._invalidate()

    def remove(self, cluster_id: int) -> None:
        """Forget a cluster (evicted by Drain)."""
        raw = self._tokens.pop(cluster_id, None)
        if raw is None:
            return
        literal = [_is_literal(tok) for tok in _canonical(" ".join(raw))]
        for key, i in self._keys.pop(cluster_id, ()):
            was_linked = self._linked(key)
            entry = self._index[key]
            entry.members.discard(cluster_id)
            entry.literals -= i >= 0 and literal[i]
            entry.proven -= i >= 0 and raw[i] == _VARIABLE_TOKEN
            if not entry.members:
                del self._index[key]
            self._count_linked_slot(key, was_linked)
        self._invalidate()

    def _count_linked_slot(self, key: Hashable, was_linked: bool) -> None:
        """Keep ``_linked_slots`` current after the members of ``key`` changed."""
        if key[0] == "slot":  # type: ignore[index]
            self._linked_slots[key[1]] += self._linked(key) - was_linked  # type: ignore[index]

    def _invalidate(self) -> None:
        self._rep.clear()
        self._text.clear()

    def _linked(self, key: Hashable) -> bool:
        entry = self._index.get(key)
        if entry is None:
            return False
        if key[0] == "run":  # type: ignore[index]
            return len(entry.members) >= 2
        # Distinct values seen in the slot: each literal word, plus one for "some masked value".
        masked = len(entry.members) > entry.literals
        return entry.proven > 0 or entry.literals + masked >= self.min_values

    def mask_variable_slot(self, content: str, mask: str) -> str:
        """``content`` (already masked) with the first literal word in a linked slot replaced by ``mask``."""
        if self.min_values <= 0:
            return content
        for delimiter in self.delimiters:
            content = content.replace(delimiter, " ")
        raw = content.split()
        if not self._linked_slots.get(len(raw)):
            return content  # no variable slot known for lines of this length
        tokens = [_MASK_TOKEN.sub("<*>", tok) for tok in raw]
        before, after = _chained_hashes(tokens)
        for i in range(1, len(tokens)):
            if _is_literal(tokens[i]) and self._linked(("slot", len(tokens), i, before[i], after[i])):
                raw[i] = mask
                return " ".join(raw)
        return content

    def component(self, cluster_id: int) -> list[int]:
        """The cluster ids forming the same template as ``cluster_id`` (sorted)."""
        seen = {cluster_id}
        expanded: set[Hashable] = set()  # each key once: a key shared by n clusters must not cost n^2
        stack = [cluster_id]
        while stack:
            for key, _ in self._keys.get(stack.pop(), ()):
                if key not in expanded and self._linked(key):
                    expanded.add(key)
                    new = self._index[key].members - seen
                    seen |= new
                    stack.extend(new)
        return sorted(seen)

    def representative(self, cluster_id: int) -> int:
        """The smallest cluster id of the template ``cluster_id`` belongs to."""
        rep = self._rep.get(cluster_id)
        if rep is None:
            members = self.component(cluster_id)
            rep = members[0]
            for member in members:
                self._rep[member] = rep
        return rep

    def template(self, cluster_id: int) -> str:
        """The template text of the group: tokens that differ between its clusters become ``<*>``."""
        rep = self.representative(cluster_id)
        text = self._text.get(rep)
        if text is None:
            rows = [_canonical(" ".join(self._tokens[m])) for m in self.component(rep)]
            if any(len(row) != len(rows[0]) for row in rows):
                text = _collapse(rows[0])  # values of varying length: the collapsed form they share
            else:
                text = " ".join(col[0] if len(set(col)) == 1 else "<*>" for col in zip(*rows, strict=True))
            self._text[rep] = text
        return text


# -- the miner -------------------------------------------------------------------------------------


class _VariableSlotMasking(AbstractMaskingInstruction):  # type: ignore[misc]  # drain3 ships no type hints
    """A Drain3 masking step that masks the slots :class:`TemplateGroups` learned to be variable."""

    def __init__(self, groups: TemplateGroups) -> None:
        super().__init__(VARIABLE_SLOT_MASK)
        self.groups = groups

    def mask(self, content: str, mask_prefix: str, mask_suffix: str) -> str:
        return self.groups.mask_variable_slot(content, mask_prefix + self.mask_with + mask_suffix)


def template_id_for(cluster_id: int) -> str:
    """The public template id of a Drain cluster id (stable: Drain's ids are persisted)."""
    return f"T{cluster_id:06d}"


class LogTemplateMiner:
    """Streaming log template mining with restart-safe ids.

    Not thread-safe: one miner belongs to one partition worker.
    """

    def __init__(
        self,
        config: LogTemplateConfig | None = None,
        persistence: PersistenceHandler | None = None,
    ) -> None:
        self.config = config or LogTemplateConfig()
        self._groups = TemplateGroups(self.config.sibling_min_values, self.config.extra_delimiters)
        drain3_config = self.config.to_drain3()
        # Last masking step: learned variable slots (it reads the grouping, so it is built per miner).
        drain3_config.masking_instructions.append(_VariableSlotMasking(self._groups))
        self._miner = TemplateMiner(persistence_handler=persistence, config=drain3_config)
        # Drain3 restored its clusters in the constructor (when a state exists): rebuild the grouping.
        # get() rather than values(): reading through the LRU cache would reorder it.
        clusters = self._miner.drain.id_to_cluster
        for cluster_id in list(clusters.keys()):
            cluster = clusters.get(cluster_id)
            if cluster is not None:
                self._groups.update(cluster_id, cluster.get_template())

    @property
    def cluster_count(self) -> int:
        """How many Drain clusters are held (bounded by ``max_clusters``)."""
        return len(self._miner.drain.id_to_cluster)

    def add(self, message: str) -> TemplateMatch:
        """Learn from one log message and return its template."""
        result = self._miner.add_log_message(message)
        cluster_id = int(result["cluster_id"])
        change = result["change_type"]
        if change != "none" or cluster_id not in self._groups:
            self._groups.update(cluster_id, str(result["template_mined"]))
        if change == "cluster_created":
            self._drop_evicted()
        rep = self._groups.representative(cluster_id)
        # New means a template id never handed out before: a new cluster that joined no existing group.
        return self._match(message, cluster_id, is_new=change == "cluster_created" and rep == cluster_id)

    def match(self, message: str) -> TemplateMatch | None:
        """The template of ``message`` without learning from it (None when no known template fits)."""
        cluster = self._miner.match(message, full_search_strategy="fallback")
        if cluster is None or cluster.cluster_id not in self._groups:
            return None
        return self._match(message, cluster.cluster_id, is_new=False)

    def template_id_of_cluster(self, cluster_id: int) -> str:
        """The current template id of a Drain cluster (clusters may have joined since it was returned)."""
        return template_id_for(self._groups.representative(cluster_id))

    def templates(self) -> dict[str, str]:
        """Every current template: id -> template text."""
        out: dict[str, str] = {}
        for cluster_id in sorted(self._groups.cluster_ids()):
            tid = template_id_for(self._groups.representative(cluster_id))
            if tid not in out:
                out[tid] = self._groups.template(cluster_id)
        return out

    def save(self) -> None:
        """Write a snapshot now (Drain3 also snapshots on every template change and periodically)."""
        if self._miner.persistence_handler is not None:
            self._miner.save_state("explicit")

    def _match(self, message: str, cluster_id: int, is_new: bool) -> TemplateMatch:
        rep = self._groups.representative(cluster_id)
        params: tuple[str, ...] = ()
        if self.config.extract_params:
            cluster = self._miner.drain.id_to_cluster.get(cluster_id)
            if cluster is not None:
                found = self._miner.extract_parameters(cluster.get_template(), message, exact_matching=False)
                params = tuple(p.value for p in found or ())
        return TemplateMatch(
            template_id=template_id_for(rep),
            template=self._groups.template(cluster_id),
            is_new=is_new,
            cluster_id=cluster_id,
            params=params,
        )

    def _drop_evicted(self) -> None:
        """Forget clusters that Drain's LRU bound evicted (only possible once the bound is reached)."""
        live = self._miner.drain.id_to_cluster
        if len(self._groups) > len(live):
            for cluster_id in self._groups.cluster_ids():
                if cluster_id not in live:
                    self._groups.remove(cluster_id)


def mine_template_ids(messages: Iterable[str], config: LogTemplateConfig | None = None) -> list[str]:
    """Template ids of ``messages`` after learning all of them (a second pass over the final state)."""
    miner = LogTemplateMiner(config)
    clusters = [miner.add(message).cluster_id for message in messages]
    return [miner.template_id_of_cluster(c) for c in clusters]


# -- error lines -----------------------------------------------------------------------------------

_ERROR_LEVELS = frozenset(
    {"E", "F", "ERR", "ERROR", "FATAL", "CRIT", "CRITICAL", "SEVERE", "ALERT", "EMERG", "EMERGENCY", "PANIC"}
)
_ERROR_WORDS = re.compile(
    # "exception"/"error" may end a longer word: NullPointerException, IOError.
    r"(?:exception|error)\b|\berrors\b|\bfail(?:s|ed|ure|ures|ing)?\b|\bfatal\b|\bpanic(?:ked)?\b"
    r"|\btime[ -]?out\b|\btimed out\b|\brefused\b|\btraceback\b|\bsegfault\b|\bcrash(?:ed)?\b",
    re.IGNORECASE,
)


def is_error_line(message: str, level: str | None = None) -> bool:
    """Whether a log line reports an error: by its level, or by error words in the message."""
    if level is not None and level.strip().upper() in _ERROR_LEVELS:
        return True
    return _ERROR_WORDS.search(message) is not None


__all__ = [
    "DEFAULT_MASKING",
    "FileTemplateState",
    "LogTemplateConfig",
    "LogTemplateMiner",
    "MaskRule",
    "TemplateGroups",
    "TemplateMatch",
    "is_error_line",
    "mine_template_ids",
    "template_id_for",
]
