"""The audit's findings: one record per image and issue, with its evidence, a score and an action; in the order a
person should act on them (duplicates with conflicting labels first, then leaks, duplicates, label errors, outliers,
unreadable files and odd images).
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

from .duplicates import Pairs, groups_of
from .labels import LabelIssues
from .quality import ACTIONS

ISSUES = ("exact_duplicate", "near_duplicate", "leak", "label_error", "outlier", "small", "dark", "light", "blurry",
          "low_information", "odd_aspect", "grayscale", "unreadable")
_ORDER = ("leak", "exact_duplicate", "near_duplicate", "label_error", "outlier", "unreadable", "small", "dark",
          "light", "blurry", "low_information", "odd_aspect", "grayscale")


class Finding(TypedDict):
    """One image's issue. ``other``: the matching (training) image for duplicates and leaks, the suggested label
    for label errors, else empty; ``score``: higher is surer."""

    path: str
    issue: str
    score: float
    other: str
    action: str
    split: str  # "train", "val"
    evidence: dict[str, Any]


class AuditResult(TypedDict, total=False):
    """What ``headstart.audit`` returns and ``audit --json`` prints."""

    data: dict[str, Any]
    model: str
    counts: dict[str, int]  # findings per issue (every issue named, 0 when none)
    findings: list[Finding]
    duplicate_sets: list[dict[str, Any]]
    class_level: dict[str, Any] | None
    label_errors: dict[str, Any] | None
    outliers: dict[str, Any]
    seconds: dict[str, float]
    n_codes_computed: int


def _name(images: Any, i: int) -> str:
    return images.class_names[images.labels[i]] if images.class_names else ""


def _exact_twins(members: np.ndarray, digests: list[bytes], keep: int) -> dict[int, int]:
    """Each member with a byte- or pixel-identical twin in the set, mapped to the twin that stands for them (``keep``
    when it is one of them, else the first); the standing twins themselves are not keys."""
    by_digest: dict[bytes, list[int]] = {}
    for i in members:
        by_digest.setdefault(digests[i], []).append(int(i))
    twin_of = {}
    for twins in by_digest.values():
        first = keep if keep in twins else twins[0]
        twin_of.update({i: first for i in twins if i != first})
    return twin_of


def duplicate_findings(coded: Any, pairs: Pairs, split: str) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Sets of exact or near duplicates within one split: every copy but the one to keep (the largest image). A copy
    with identical pixels names its identical twin (``exact_duplicate``), whatever near set holds them both; every
    other copy names the image to keep (``near_duplicate``, scored by its best cosine to a different image)."""
    findings, sets = [], []
    if not len(pairs):
        return findings, sets
    groups = groups_of(len(coded.codes), pairs)
    pixels = coded.stats.column("width") * coded.stats.column("height")
    digests = coded.stats.digest
    path = [str(p) for p in coded.images.paths]
    best_cosine: dict[int, float] = {}
    for q, r, c, e in zip(pairs.query, pairs.reference, pairs.cosine, pairs.exact):
        for i in (int(q), int(r)):
            if not e:
                best_cosine[i] = max(best_cosine.get(i, 0.0), float(c))
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if len(members) < 2:
            continue
        keep = int(max(members, key=lambda i: (pixels[i], -i)))
        twin_of = _exact_twins(members, digests, keep)
        labels = sorted({_name(coded.images, i) for i in members})
        conflicting = len(labels) > 1
        sets.append({"split": split, "kind": "exact" if len(twin_of) == len(members) - 1 else "near",
                     "paths": [path[i] for i in members], "labels": [_name(coded.images, i) for i in members],
                     "keep": path[keep], "conflicting_labels": conflicting,
                     "exact_copy_of": {path[i]: path[t] for i, t in twin_of.items()}})
        for i in members:
            if i == keep:
                continue
            other = twin_of.get(int(i), keep)
            action = (f"labels disagree in this set ({', '.join(labels)}): decide the right one, then keep one copy"
                      if conflicting else "remove: a copy of the kept image (keep one)" if other == keep else
                      "remove: an identical copy of the other image (keep one)")
            findings.append(Finding(path=path[i], issue="exact_duplicate" if int(i) in twin_of else "near_duplicate",
                                    score=1.0 if int(i) in twin_of else round(best_cosine.get(int(i), 0.0), 4),
                                    other=path[other], action=action, split=split,
                                    evidence={"set_size": len(members), "conflicting_labels": conflicting,
                                              "label": _name(coded.images, i),
                                              "other_label": _name(coded.images, other), "keep": path[keep]}))
    return findings, sets


def leak_findings(val: Any, train: Any, pairs: Pairs) -> list[Finding]:
    """Validation images with an exact or near duplicate among the training images: an identical twin when there is
    one, else the closest copy."""
    best: dict[int, tuple[bool, float, int]] = {}
    for q, r, c, e in zip(pairs.query, pairs.reference, pairs.cosine, pairs.exact):
        candidate = (bool(e), 1.0 if e else float(c), -int(r))
        if int(q) not in best or candidate > best[int(q)]:
            best[int(q)] = candidate
    findings = []
    for q, (exact, score, r) in sorted(best.items()):
        r = -r
        label, other_label = _name(val.images, q), _name(train.images, r)
        action = "remove it from validation (or its copy from training): its score does not measure new images"
        if label != other_label:
            action += f"; the labels also disagree ({label} vs {other_label})"
        findings.append(Finding(path=str(val.images.paths[q]), issue="leak", score=round(score, 4),
                                other=str(train.images.paths[r]), action=action, split="val",
                                evidence={"kind": "exact" if exact else "near", "label": label,
                                          "other_label": other_label}))
    return findings


def label_findings(train: Any, issues: LabelIssues, agreement: np.ndarray) -> list[Finding]:
    """Flagged label errors, with the suggested label and the probabilities behind it."""
    names = train.images.class_names
    findings = []
    for i in np.flatnonzero(issues.flagged):
        given, suggested = int(train.images.labels[i]), int(issues.suggested[i])
        p_given = 1.0 - float(issues.score[i])
        findings.append(Finding(
            path=str(train.images.paths[i]), issue="label_error", score=round(float(issues.score[i]), 4),
            other=names[suggested], split="train",
            action=f"check the label: it is filed as {names[given]} but looks like {names[suggested]}",
            evidence={"given": names[given], "suggested": names[suggested], "p_given": round(p_given, 4),
                      "p_suggested": round(float(issues.proba[i, suggested]), 4),
                      "neighbours_agreeing": round(float(agreement[i]), 2)}))
    return findings


def assemble(train: Any, val: Any, train_pairs: Pairs, val_pairs: Pairs | None, leaks: Pairs | None,
             issues: LabelIssues | None, agreement: np.ndarray | None, outliers: tuple[np.ndarray, float],
             val_outlier: np.ndarray | None, flags: dict[str, np.ndarray]) -> AuditResult:
    """Every finding, ordered for action, with counts and the duplicate sets."""
    findings, sets = duplicate_findings(train, train_pairs, "train")
    if val is not None and val_pairs is not None:
        more, more_sets = duplicate_findings(val, val_pairs, "val")
        findings += more
        sets += more_sets
    if val is not None and leaks is not None:
        findings += leak_findings(val, train, leaks)
    if issues is not None:
        findings += label_findings(train, issues, agreement)
    score, threshold = outliers
    splits = [("train", train, score)] + ([("val", val, val_outlier)] if val is not None and val_outlier is not None
                                          else [])
    for split, coded, values in splits:
        for i in np.flatnonzero(values > threshold):
            findings.append(Finding(path=str(coded.images.paths[i]), issue="outlier", score=round(float(values[i]), 4),
                                    other="", action=ACTIONS["outlier"], split=split,
                                    evidence={"threshold": round(float(threshold), 4)}))
    rows = [("train", train, i) for i in range(len(train.codes))]
    rows += [("val", val, i) for i in range(len(val.codes))] if val is not None else []
    for kind, values in flags.items():
        for row in np.flatnonzero(values > 0):
            split, coded, i = rows[row]
            stats = coded.stats
            findings.append(Finding(path=str(coded.images.paths[i]), issue=kind, score=round(float(values[row]), 4),
                                    other="", action=ACTIONS[kind], split=split,
                                    evidence={"width": int(stats.column("width")[i]),
                                              "height": int(stats.column("height")[i])}))
    for split, coded in (("train", train), ("val", val)):
        for path, reason in (coded.skipped if coded is not None else []):
            findings.append(Finding(path=path, issue="unreadable", score=1.0, other="", split=split,
                                    action=f"fix or remove it: {reason}", evidence={"reason": reason}))
    findings.sort(key=lambda f: (not f["evidence"].get("conflicting_labels", False), _ORDER.index(f["issue"]),
                                 -f["score"], f["path"]))
    sets.sort(key=lambda s: (not s["conflicting_labels"], s["kind"] != "exact", -len(s["paths"])))
    counts = {issue: sum(f["issue"] == issue for f in findings) for issue in ISSUES}
    return AuditResult(counts=counts, findings=findings, duplicate_sets=sets)
