"""The audit's outputs: the rows table, the per-sample distances, the indicators, the card and the figure.

Files under an output prefix (:class:`~advbridge.bridge.io.OutputPrefix`), each written atomically:

- ``<out>.csv``: one row per attack × library × stage (``naive`` or the remedy), with its robust accuracy,
  propagations per sample and optimality (AttackBench, against the lower envelope of every row), then the
  worst-case rows (naive, and after the remedies);
- ``<out>-samples.csv``: the distance each row found for each sample (``inf``: never succeeded), the data
  behind optimality;
- ``<out>-indicators.csv``: every indicator, its value, threshold, whether raised, its remedy, the value after
  it, robust accuracy before → after;
- ``<out>.json``: ``clean_accuracy``, ``worst_case_robust_accuracy``, ``indicators`` (name →
  ``{"value", "threshold", "raised", "remedy", ...}``), the config, the context, provenance;
- ``<out>-card.json``: the report card (:func:`card`), a RobustBench leaderboard entry's fields (``clean_acc``,
  ``autoattack_acc``, ``external``, ``unreliable``... as RobustBench spells and formats them) and the audit's own:
  clean accuracy, AutoAttack, the best adaptive row, the worst case, each row's contribution to it, the indicators,
  the binarization test, cost, versions and seeds;
- ``<out>.md``: the card a person reads first — the audited system (and its surrogate), the headline numbers, the
  verdict (the worst-case number; whether an indicator stayed raised after its remedy), the warnings, what broke
  the model; then the indicators and the rows;
- ``<out>.png``: robust accuracy vs eps of every row and of the envelope.

Every file is written atomically (:func:`~advbridge.bridge.io.atomic_write`) under its own tail of the prefix.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import torch

from advbridge.bridge.io import OutputPrefix, atomic_write, atomic_write_text
from advbridge.bridge.provenance import provenance
from advbridge.experiments.audit.optimality import envelope, optimality_table, samples_table
from advbridge.experiments.audit.results import NAIVE, Audit, AuditRow
from advbridge.experiments.core.reductions import worst_case_robust

log = logging.getLogger(__name__)

#: Every file an audit writes, as tails of its output prefix.
TAILS = {
    "results": ".csv", "samples": "-samples.csv", "indicators": "-indicators.csv", "metadata": ".json",
    "card": "-card.json", "markdown": ".md", "figure": ".png",
}  # fmt: skip
#: The card's format (its ``card`` field), bumped when a field changes meaning.
CARD_FORMAT = "advbridge-audit-card/1"
#: The columns of the printed and Markdown tables.
SHOWN = ["attack", "library", "stage", "status", "attacked", "robust_acc", "robust_after", "propagations",
         "max_propagations", "optimality", "seconds", "remedy_for"]  # fmt: skip
INDICATOR_COLUMNS = ["indicator", "value", "threshold", "raised", "remedy", "value_after_remedy", "stayed_raised",
                     "robust_accuracy_before", "robust_accuracy_after", "source"]  # fmt: skip


def distance_table(audit: Audit) -> pd.DataFrame:
    """Per-sample distances (index: sample; one column per ok row, named by its key)."""
    return pd.DataFrame({r.key: r.distance.numpy() for r in audit.rows if r.ok and r.distance is not None})


def results_table(audit: Audit) -> pd.DataFrame:
    """One row per attack × library × stage, then the worst case before and after the remedies.

    ``attacked``: the samples the row attacked (the cascade: those still robust before it); ``robust_acc``: the
    share of all samples the row left correct (one it did not attack counts as not broken by it);
    ``robust_after``: the worst case over this row and every row before it (AutoAttack's "robust accuracy after
    each attack"); ``success_rate`` and ``median_distance`` over the clean-correct samples the row attacked;
    ``optimality`` (AttackBench: against the envelope of every row, each on every sample) only with
    ``every_point``."""
    distances = distance_table(audit)
    every_point = audit.config.every_point
    optimality = (
        optimality_table(distances, audit.clean_accuracy) if every_point and len(distances.columns) else pd.Series()
    )
    records = []
    so_far: list = []
    for row in audit.rows:
        record = {"attack": row.attack, "library": row.library, "stage": row.stage, "status": row.status,
                  "n": len(audit.clean), "clean_acc": audit.clean_accuracy}  # fmt: skip
        if row.ok:
            # an ok row went through Cascade.finish (or copied a finished row's counts): every tensor is set
            assert row.robust is not None and row.distance is not None
            assert row.forward is not None and row.backward is not None
            propagations = (row.forward + row.backward).double()
            asked = audit.clean if row.asked is None else audit.clean & row.asked
            so_far.append(row.robust)
            record.update(
                attacked=int(asked.sum()),
                robust_acc=float(row.robust.double().mean()),
                robust_after=float(worst_case_robust(audit.clean, so_far).double().mean()),
                success_rate=float((~row.robust & asked).double().sum() / max(1, int(asked.sum()))),
                median_distance=float(np.median(row.distance[asked].numpy())) if asked.any() else math.nan,
                forward_per_sample=float(row.forward.double().mean()),
                backward_per_sample=float(row.backward.double().mean()),
                propagations=float(propagations.mean()),
                max_propagations=int(propagations.max()),
                hook_forward_per_sample=row.hook_forward / len(audit.clean),
                hook_backward_per_sample=row.hook_backward / len(audit.clean),
                optimality=float(optimality.get(row.key, math.nan)),
            )  # fmt: skip
        record.update(seconds=row.seconds, remedy_for=",".join(row.indicators), reason=row.reason)
        records.append(record)
    for stage, robust in (("worst-case naive", audit.robust_under([NAIVE])), ("worst-case", audit.robust_under())):
        records.append({"attack": stage, "library": "", "stage": "", "status": "ok", "n": len(audit.clean), "remedy_for": "",
                        "clean_acc": audit.clean_accuracy, "robust_acc": float(robust.double().mean()),
                        "reason": "per sample, the worst over the rows" + (" of the naive cascade" if
                                                                               "naive" in stage else "")})  # fmt: skip
    return pd.DataFrame.from_records(records)


def indicator_table(audit: Audit) -> pd.DataFrame:
    records = [{"indicator": name, **result.to_dict()} for name, result in audit.indicators.items()]
    if not records:  # (every audit measures some; a hand-built one may not)
        return pd.DataFrame(columns=INDICATOR_COLUMNS).astype({"raised": bool})
    return pd.DataFrame.from_records(records)[INDICATOR_COLUMNS]


def verdict(audit: Audit) -> str:
    """The card's first line: the worst-case number, and whether the audit can be trusted."""
    stayed = audit.stayed_raised
    raised = [name for name, r in audit.indicators.items() if r.raised]
    trust = (
        "the model did not learn (clean accuracy at chance): no robustness number of it means anything"
        if "failed_training" in stayed
        else f"indicators still raised after their remedy: {', '.join(stayed)} — do not trust this number"
        if stayed
        else f"indicators raised and remedied: {', '.join(raised)}"
        if raised
        else "no indicator of attack failure raised"
    )
    return (
        f"worst-case robust accuracy {audit.robust_after:.4f} ({audit.config.norm}, eps={audit.config.eps:g}; "
        f"naive cascade {audit.robust_before:.4f}, clean {audit.clean_accuracy:.4f}); {trust}"
    )


def cost_line(audit: Audit) -> str:
    """The audit's cost (the rows' attacks, and every pass through the model) next to AutoAttack standard's alone
    on the same images (``versus_autoattack``; else AutoAttack's row in the audit), propagations per sample."""
    cost = audit.cost()
    line = (
        f"cost: {cost['propagations_per_sample']:.1f} propagations per sample in the attacks, "
        f"{cost['model_propagations_per_sample']:.1f} through the model in all, {cost['seconds']:.1f} s"
    )
    alone = audit.autoattack_alone
    if alone is not None:
        ratio = cost["model_propagations_per_sample"] / max(alone["propagations_per_sample"], 1e-12)
        line += (
            f" (AutoAttack standard alone: {alone['propagations_per_sample']:.1f} propagations per sample, "
            f"{alone['seconds']:.1f} s, robust accuracy {alone['robust_accuracy']:.4f}; the audit {ratio:.2f}x its "
            f"propagations, worst case {audit.robust_after:.4f})"
        )
    elif cost["autoattack_propagations_per_sample"] is not None:
        line += (f" (AutoAttack standard's row: {cost['autoattack_propagations_per_sample']:.1f} propagations per "
                 f"sample, {cost['autoattack_seconds']:.1f} s)")  # fmt: skip
    return line


def metadata(audit: Audit, context: Mapping | None, files: list[Path]) -> dict:
    best = audit.best_single
    return {
        "clean_accuracy": audit.clean_accuracy,
        "worst_case_robust_accuracy": audit.robust_after,
        "worst_case_robust_accuracy_naive": audit.robust_before,
        "worst_case_robust_accuracy_white_box": audit.robust_white_box,
        "best_single_attack": None if best is None else {"row": best.key, "robust_accuracy": best.robust_accuracy},
        "verdict": verdict(audit),
        "cost": audit.cost(),
        "indicators_stayed_raised": audit.stayed_raised,
        "warnings": list(audit.warnings),
        "indicators": {name: result.to_dict() for name, result in audit.indicators.items()},
        "config": {**audit.config.__dict__, "libraries": list(audit.config.libraries)},
        "num_classes": audit.num_classes,
        "n": len(audit.clean),
        **(dict(context) if context else {}),
        **provenance(),
        "files": [p.name for p in files],
    }  # fmt: skip


def curve(distances: np.ndarray, eps_grid: np.ndarray) -> np.ndarray:
    """Robust accuracy at each eps of the grid: the share of samples whose distance exceeds it."""
    return (distances[None, :] > eps_grid[:, None]).mean(1)


def save_figure(audit: Audit, path: Path) -> Path:
    """Robust accuracy vs eps of every ok row and of the lower envelope, up to twice the audit's eps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distances = distance_table(audit)
    grid = np.linspace(0, 2 * audit.config.eps, 201)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in distances.columns:
        ax.step(grid, curve(distances[key].to_numpy(), grid), where="post", lw=1, alpha=0.7, label=key)
    if len(distances.columns):
        ax.step(grid, curve(envelope(distances), grid), where="post", lw=2.5, color="black", label="envelope")
    ax.axvline(audit.config.eps, ls="--", color="gray", lw=1)
    ax.set(xlabel=f"eps ({audit.config.norm})", ylabel="robust accuracy", ylim=(-0.02, 1.02))
    ax.legend(fontsize=6, loc="upper right", ncol=2)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=120)

    try:
        return atomic_write(path, write)
    finally:
        plt.close(fig)


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


def best_adaptive(audit: Audit) -> AuditRow | None:
    """The remedy row (an adaptive attack, run because an indicator was raised) with the lowest robust accuracy."""
    adaptive = [r for r in audit.rows if r.ok and r.stage != NAIVE]
    return min(adaptive, key=lambda r: r.robust_accuracy) if adaptive else None


def autoattack_entry(audit: Audit) -> dict:
    """AutoAttack standard's row: its robust accuracy, or why it did not run and what ran instead (APGD-CE on a model
    with fewer than 4 classes)."""
    row = next((r for r in audit.rows if r.attack == "autoattack"), None)
    if row is None:
        return {"robust_accuracy": None, "status": "not run", "reason": "not asked for (--no-autoattack)"}
    entry: dict = {"row": row.key, "status": row.status, "reason": row.reason,
                   "robust_accuracy": row.robust_accuracy if row.ok else None,
                   "propagations_per_sample": row.propagations_per_sample if row.ok else None}  # fmt: skip
    substitutes = [r for r in audit.rows if r.ok and r.stage == NAIVE and r.attack.startswith("apgd-")]
    if not row.ok and substitutes:
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
        else f"— ({autoattack['status']})",
        "best adaptive": "— (no remedy ran)" if adaptive is None else number(adaptive["robust_accuracy"]),
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


def write_audit(audit: Audit, out: str | Path | OutputPrefix, context: Mapping | None = None) -> list[Path]:
    """Write every file of the audit under ``out`` (module docstring); returns their paths."""
    prefix = OutputPrefix.of(out)
    files = dict(zip(TAILS, prefix.files(TAILS.values()), strict=True))  # distinct tails: no file written twice
    table, indicators = results_table(audit), indicator_table(audit)
    distances = distance_table(audit)
    labels = {r.key: {"attack": r.attack, "library": r.library, "stage": r.stage} for r in audit.rows if r.ok}
    info = metadata(audit, context, list(files.values()))
    texts = {
        "results": table.assign(git_revision=info["git_revision"]).to_csv(index=False),
        "samples": samples_table(distances, labels).to_csv(index=False),
        "indicators": indicators.to_csv(index=False),
        "metadata": json.dumps(info, indent=1, sort_keys=True, default=str) + "\n",
        "card": json.dumps(card(audit, context, list(files.values())), indent=1, allow_nan=False) + "\n",
        "markdown": markdown_card(audit, context, indicators, table),
    }
    paths = [atomic_write_text(files[key], text) for key, text in texts.items()]
    paths.append(save_figure(audit, files["figure"]))
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths
