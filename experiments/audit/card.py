"""The audit's report card: ``<out>-card.json``, a RobustBench leaderboard entry's fields (``clean_acc``,
``autoattack_acc``, ``external``, ``unreliable``... as RobustBench spells and formats them) and the audit's own
(clean accuracy, AutoAttack, the best adaptive row, the worst case, each row's contribution to it, the indicators,
the binarization test, cost, versions and seeds); and ``<out>.md``, the page a person reads first."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import pandas as pd
import torch

from advbridge.bridge.provenance import provenance
from advbridge.experiments.audit.results import NAIVE, Audit, AuditRow
from advbridge.experiments.audit.tables import SHOWN, cost_line, verdict

#: The card's format (its ``card`` field), bumped when a field changes meaning.
CARD_FORMAT = "advbridge-audit-card/1"


def percent(value: float | None) -> str | None:
    """A RobustBench accuracy: percent as text with two decimals (``"52.40"``); ``None`` when not measured."""
    return None if value is None or math.isnan(value) else f"{100 * value:.2f}"


def eps_text(eps: float) -> str:
    """An eps as RobustBench writes it: ``"0.3"``, ``"0.5"``, or an exact fraction of 255 (``"8/255"``)."""
    short = f"{eps:g}"
    if float(short) == eps:
        return short
    steps = round(eps * 255)
    return f"{steps}/255" if math.isclose(steps / 255, eps, rel_tol=1e-9) else repr(eps)


def plain(value: object) -> object:
    """``value`` with NaN and infinities as ``None`` (the card is strict JSON), tuples as lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def contributions(audit: Audit) -> list[dict]:
    """Each row's share in the worst case, in cascade order: ``broke`` (clean samples it fooled), ``first`` (those no
    earlier row fooled: the ``first`` counts add up to the clean samples the worst case breaks) and ``unique`` (those
    no other row fooled: what the worst case loses without this row); a row that did not run has its status and
    reason instead."""
    ok = [r for r in audit.rows if r.ok]
    broken = {r.key: audit.clean & ~r.robust for r in ok if r.robust is not None}
    seen = torch.zeros_like(audit.clean)
    records = []
    for row in audit.rows:
        record: dict = {"row": row.key, "attack": row.attack, "library": row.library, "stage": row.stage,
                        "status": row.status}  # fmt: skip
        if row.key in broken and row.ok:
            mine = broken[row.key]
            others = torch.zeros_like(mine)
            for key, other in broken.items():
                if key != row.key:
                    others |= other
            record.update(
                robust_accuracy=row.robust_accuracy, broke=int(mine.sum()), first=int((mine & ~seen).sum()),
                unique=int((mine & ~others).sum()), propagations_per_sample=row.propagations_per_sample,
                seconds=row.seconds, remedy_for=list(row.indicators),
            )  # fmt: skip
            seen |= mine
        else:
            record["reason"] = row.reason
        records.append(record)
    return records


def on_every_sample(row: AuditRow, audit: Audit) -> bool:
    """Whether ``row`` attacked every clean-correct sample, so that its robust accuracy is that attack's own (in
    the cascade a row attacks only what earlier rows left robust)."""
    return row.asked is None or bool((row.asked | ~audit.clean).all())


def best_adaptive(audit: Audit) -> AuditRow | None:
    """Of the remedy rows (adaptive attacks, run because an indicator was raised) that attacked every sample
    (:func:`on_every_sample`), the one with the lowest robust accuracy; ``None`` when there is none (in the
    cascade: the worst case is the number)."""
    adaptive = [r for r in audit.rows if r.ok and r.stage != NAIVE and on_every_sample(r, audit)]
    return min(adaptive, key=lambda r: r.robust_accuracy) if adaptive else None


def autoattack_entry(audit: Audit) -> dict:
    """AutoAttack standard's robust accuracy: alone on every sample (``--versus-autoattack``), else its row when the
    row attacked every sample (:func:`on_every_sample`: ``--every-point``); in the cascade without it, ``None``, with what the row attacked
    (only the samples no earlier row broke). Or why it did not run and what ran instead (APGD-CE on a model with
    fewer than 4 classes)."""
    alone = audit.autoattack_alone
    row = next((r for r in audit.rows if r.attack == "autoattack"), None)
    if row is None and alone is None:
        return {"robust_accuracy": None, "status": "not run", "reason": "not asked for (--no-autoattack)"}
    entry: dict = {"row": None if row is None else row.key, "status": "ok" if row is None else row.status,
                   "reason": None if row is None else row.reason, "robust_accuracy": None,
                   "propagations_per_sample": None, "measured": None}  # fmt: skip
    if alone is not None and alone.get("failed"):
        entry.update(propagations_per_sample=alone["propagations_per_sample"],
                     measured=f"alone on every sample (--versus-autoattack): failed, {alone['failed']}")  # fmt: skip
    elif alone is not None:
        entry.update(robust_accuracy=alone["robust_accuracy"], propagations_per_sample=alone["propagations_per_sample"],
                     measured="alone on every sample (--versus-autoattack)")  # fmt: skip
    elif row is not None and row.ok and on_every_sample(row, audit):
        entry.update(robust_accuracy=row.robust_accuracy, propagations_per_sample=row.propagations_per_sample,
                     measured="its row, on every sample")  # fmt: skip
    elif row is not None and row.ok:
        attacked = len(audit.clean) if row.asked is None else int(row.asked.sum())
        entry["measured"] = (f"in the cascade, on the {attacked} samples no earlier row broke: no robust accuracy of "
                             "its own (--versus-autoattack measures it alone)")  # fmt: skip
    substitutes = [r for r in audit.rows if r.ok and r.stage == NAIVE and r.attack.startswith("apgd-")]
    if row is not None and not row.ok and substitutes:
        entry["instead"] = [{"row": r.key, "robust_accuracy": r.robust_accuracy} for r in substitutes]
    return entry


def binarization_entry(audit: Audit) -> dict | None:
    """The binarization test (Zimmermann et al. 2022) as the indicator table has it: the first indicator whose name
    says ``binarization``; ``None`` when this audit has none."""
    name = next((n for n in audit.indicators if "binarization" in n), None)
    return None if name is None else {"indicator": name, **audit.indicators[name].to_dict()}


def system_name(context: Mapping) -> str:
    """What was audited, as the card names it: the system's description, else the defense or module, else the
    model."""
    return str(context.get("system") or context.get("audited") or context.get("model") or "model")


def card(audit: Audit, context: Mapping | None = None, files: list[Path] | None = None) -> dict:
    """The report card (module docstring): a RobustBench leaderboard entry's fields, then the audit's.

    RobustBench's fields keep its names and formats: ``clean_acc``, ``autoattack_acc`` and ``external`` (the
    robust accuracy of a stronger evaluation than AutoAttack: here the audit's worst case) as percent text,
    ``eps`` as text (``"8/255"``), ``unreliable`` (here: an indicator of attack failure stayed raised after its
    remedy), ``footnote``; the fields only an author can fill (``link``, ``authors``, ``venue``, ``reported``,
    ``additional_data``, ``number_forward_passes``) are ``null``. The audit's own fields are fractions in [0, 1].
    """
    context = dict(context or {})
    info = provenance()
    config = audit.config
    adaptive, white_box = best_adaptive(audit), audit.robust_white_box
    autoattack = autoattack_entry(audit)
    stayed = audit.stayed_raised
    n = len(audit.clean)
    cost = audit.cost()
    from advbridge import __version__

    entry = {
        "card": CARD_FORMAT,
        # RobustBench's leaderboard entry (model_info/<dataset>/<threat_model>/<name>.json)
        "name": system_name(context), "architecture": context.get("model"), "dataset": context.get("dataset"),
        "threat_model": config.norm, "eps": eps_text(config.eps),
        "clean_acc": percent(audit.clean_accuracy), "autoattack_acc": percent(autoattack["robust_accuracy"]),
        "external": percent(audit.robust_after), "unreliable": bool(stayed), "footnote": verdict(audit),
        "reported": None, "link": None, "authors": None, "venue": None, "additional_data": None,
        "number_forward_passes": None,
        # the audit's own
        "audited": context.get("audited"), "surrogate": context.get("surrogate"),
        "threat": {"norm": config.norm, "eps": config.eps, "eps_text": eps_text(config.eps)},
        "n": n, "num_classes": audit.num_classes,
        "clean_accuracy": audit.clean_accuracy,
        "autoattack": autoattack,
        "best_adaptive": None if adaptive is None else {
            "row": adaptive.key, "robust_accuracy": adaptive.robust_accuracy, "remedy_for": list(adaptive.indicators)},
        "worst_case": {"robust_accuracy": audit.robust_after, "naive": audit.robust_before, "white_box": white_box},
        "unreliable_because": stayed,
        "warnings": list(audit.warnings),
        "rows": contributions(audit),
        "indicators": [{"indicator": name, **r.to_dict()} for name, r in audit.indicators.items()],
        "binarization_test": binarization_entry(audit),
        "cost": {**cost, "seconds_per_sample": cost["seconds"] / n if n else None},
        "versions": {"advbridge": __version__, "python": info["python"], **dict(info["versions"])},  # type: ignore[call-overload]
        "git_revision": info["git_revision"], "machine": info["machine"],
        "seeds": {"attacks": config.seed, "data": context.get("data_seed")},
        "config": {**config.__dict__, "libraries": list(config.libraries)},
        "files": [f.name for f in files or []],
    }  # fmt: skip
    return cast(dict, plain(entry))


def markdown_card(audit: Audit, context: Mapping | None, indicators: pd.DataFrame, table: pd.DataFrame) -> str:
    """The ``.md`` card: one page a person reads first (the audited system, the headline numbers, the verdict, the
    warnings, what broke the model, the raised indicators), then every indicator and every row."""
    from advbridge.experiments.compare import format_table

    context = dict(context or {})
    summary = card(audit, context)

    def number(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    autoattack, adaptive = summary["autoattack"], summary["best_adaptive"]
    surrogate = f" (surrogate: {context['surrogate']})" if context.get("surrogate") else ""
    headline = pd.DataFrame([{
        "clean": number(audit.clean_accuracy),
        "AutoAttack": number(autoattack["robust_accuracy"]) if autoattack["robust_accuracy"] is not None
        else "— (in the cascade)" if autoattack["status"] == "ok" else f"— ({autoattack['status']})",
        "best adaptive": number(adaptive["robust_accuracy"]) if adaptive is not None
        else "— (in the cascade)" if any(r.ok and r.stage != NAIVE for r in audit.rows) else "— (no remedy ran)",
        "worst case": f"**{audit.robust_after:.4f}**",
        "unreliable": "**yes**: " + ", ".join(audit.stayed_raised) if audit.stayed_raised else "no",
    }])  # fmt: skip
    lines = [
        f"# Audit: {system_name(context)} on {context.get('dataset', 'images')}{surrogate}",
        "",
        headline.to_markdown(index=False, disable_numparse=True),
        "",
        f"**{verdict(audit)}**",
        "",
        *[f"> warning: {w}" for w in audit.warnings],
        *([""] if audit.warnings else []),
        f"{audit.config.norm}, eps = {eps_text(audit.config.eps)}; n = {len(audit.clean)} images, "
        f"{audit.num_classes} classes"
        + (f", budget {audit.config.budget} propagations per sample" if audit.config.budget else "")
        + f"; seed {audit.config.seed}; advbridge {summary['versions']['advbridge']} at {summary['git_revision']}, "
        f"torch {summary['versions'].get('torch')}",
        "",
        cost_line(audit),
    ]
    if autoattack["status"] != "ok":
        lines += ["", f"AutoAttack: {autoattack['status']} — {autoattack['reason']}"]
    broke = pd.DataFrame([r for r in summary["rows"] if "broke" in r and r["broke"]])
    lines += ["", "## What broke the model", ""]
    if len(broke):
        lines += ["Samples each row fooled: all, the first (no earlier row had), the only (no other row did).", "",
                  broke[["attack", "library", "stage", "robust_accuracy", "broke", "first", "unique"]].to_markdown(
                      index=False)]  # fmt: skip
    else:
        lines.append("no row fooled any clean sample")
    raised = indicators.loc[indicators["raised"].astype(bool)]
    lines += ["", "## Indicators raised", ""]
    if len(raised):
        shown = ["indicator", "value", "threshold", "remedy", "value_after_remedy", "stayed_raised",
                 "robust_accuracy_before", "robust_accuracy_after"]  # fmt: skip
        lines.append(raised[shown].to_markdown(index=False))
    else:
        lines.append("none")
    binarization = summary["binarization_test"]
    if binarization is not None:
        lines += ["", f"binarization test ({binarization['indicator']}): value {binarization['value']}, threshold "
                  f"{binarization['threshold']}, " + ("raised" if binarization["raised"] else "passed")]  # fmt: skip
    lines += [
        "",
        "## All indicators",
        "",
        indicators.to_markdown(index=False),
        "",
        "## Rows",
        "",
        format_table(table, SHOWN, markdown=True, drop_empty=True, reason_width=80),
        "",
    ]
    return "\n".join(lines)
