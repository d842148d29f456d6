"""A study's report, built from its finished cells on disk (so a resumed study reports what an uninterrupted
one does): the tidy CSV, the Markdown report pivoted like the study's table, the model cards, the figures.

Each cell of the pivoted table is ``transfer / adaptive / worst case`` robust accuracy in %, over every attack
library and attack that ran for it:

- ``transfer``: the lowest robust accuracy of the ``transfer`` rows (the attack computed on the undefended
  twin, what the study did); for the undefended model itself, of its ``white-box`` rows;
- ``adaptive``: the lowest of the rows run on the defended system (``white-box`` and ``adaptive``: BPDA, EOT,
  margin loss, AutoAttack, detector-aware, end to end);
- ``worst case``: per sample over every row of that defended system (the ``worst-case`` row);

followed by the raised gradient-masking flags (:mod:`experiments.flags`) with their largest value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from advbridge.bridge.io import atomic_write, atomic_write_text
from advbridge.experiments.defend.report import format_table
from advbridge.experiments.flags import FLAG_COLUMNS, RAISED_BELOW
from advbridge.experiments.studies.engine import Study, done_marker, load_cell
from advbridge.zoo.training_check import check_card

#: The report's files, in ``<out>/``.
REPORT_FILES = {
    "results": "results.csv",
    "eps": "results-eps.csv",
    "report": "report.md",
    "cards": "cards.json",
    "bars": "transfer-vs-adaptive.png",
    "curves": "robust-vs-eps.png",
}
ON_SYSTEM = ("white-box", "adaptive")
DETAIL_COLUMNS = [
    "study_defense",
    "study_attack",
    "mode",
    "attack",
    "attack_library",
    "clean_acc",
    "robust_acc",
    "success_rate",
    "median_l2",
    "median_linf",
    "detection_rate",
    "fpr",
    "threshold",
    "zero_grad_share",
    "flags",
]


def collect(study: Study, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """The finished cells' rows, eps curves and metadata (unfinished cells are left out)."""
    tables, curves, metas = [], [], []
    for cell in study.cells:
        if not done_marker(out, cell).exists():
            continue
        table, curve, meta = load_cell(out, cell)
        versions = meta.get("versions", {})
        library_package = {"own": "advbridge", "art": "adversarial-robustness-toolbox", "advlib": "adv-lib"}
        table["library_version"] = [
            versions.get(library_package.get(str(lib), str(lib)), "") if isinstance(lib, str) else ""
            for lib in table["attack_library"]
        ]
        table["torch_version"] = versions.get("torch", "")
        tables.append(table)
        curves.append(curve)
        metas.append(meta)
    results = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    results.insert(0, "study", study.name) if len(results) else None
    return results, pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(), metas


def summarize(results: pd.DataFrame, defense: str, attack: str) -> dict | None:
    """``clean``, ``transfer``, ``adaptive``, ``worst`` (accuracies) and the raised ``flags`` of one cell."""
    rows = results[(results["study_defense"] == defense) & (results["study_attack"] == attack)]
    rows = rows[(rows["status"] == "ok") & rows["robust_acc"].notna()]
    if not len(rows):
        return None
    by_mode = {m: rows[rows["mode"] == m]["robust_acc"] for m in ("none", "transfer", "worst-case")}
    on_system = rows[rows["mode"].isin(ON_SYSTEM)]["robust_acc"]
    transfer = by_mode["transfer"] if len(by_mode["transfer"]) else rows[rows["mode"] == "white-box"]["robust_acc"]
    raised: dict[str, float] = {}
    for _, row in rows.iterrows():
        for name in str(row["flags"]).split(",") if isinstance(row["flags"], str) else []:
            if name:
                raised[name] = max(raised.get(name, -math.inf), float(row[name]))
    value = lambda s: float(s.min()) if len(s) else math.nan  # noqa: E731
    return {
        "clean": value(by_mode["none"]),
        "transfer": value(transfer),
        "adaptive": value(on_system),
        "worst": value(by_mode["worst-case"]),
        "flags": raised,
    }


def _pct(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def pivot_markdown(study: Study, results: pd.DataFrame) -> str:
    """The study's table: one row per defense, a clean column, one column per attack ("T / A / W" + flags)."""
    lines = ["| defense | clean | " + " | ".join(study.attacks) + " |", "|---" * (2 + len(study.attacks)) + "|"]
    for defense in study.defenses:
        cells, clean = [], math.nan
        for attack in study.attacks:
            s = summarize(results, defense, attack) if len(results) else None
            if s is None:
                cells.append("not run")
                continue
            clean = s["clean"] if math.isnan(clean) else clean
            if "failed_training" in s["flags"]:
                cells.append(
                    f"no defense evaluated: a model did not learn (⚑ failed_training {s['flags']['failed_training']:.3g})"
                )
                continue
            text = f"{_pct(s['transfer'])} / {_pct(s['adaptive'])} / {_pct(s['worst'])}"
            if s["flags"]:
                text += " ⚑ " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(s["flags"].items()))
            cells.append(text)
        lines.append(f"| {defense} | {_pct(clean)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def published_markdown(study: Study, results: pd.DataFrame) -> str:
    """The study's published numbers next to ours (clean; transfer, as the study measured; adaptive)."""
    if not study.published and not study.published_clean:
        return "The study published no table of numbers to compare with.\n"
    head = "| defense | clean: published / ours | " + " | ".join(
        f"{a}: published / ours transfer / ours adaptive" for a in study.attacks
    )
    lines = [head + " |", "|---" * (2 + len(study.attacks)) + "|"]
    for defense in study.defenses:
        row = [defense]
        ours = [summarize(results, defense, a) if len(results) else None for a in study.attacks]
        clean = next((s["clean"] for s in ours if s is not None), math.nan)
        pub = study.published_clean.get(defense)
        row.append(f"{'—' if pub is None else f'{pub:.1f}'} / {_pct(clean)}")
        for attack, s in zip(study.attacks, ours):
            pub = study.published.get((defense, attack))
            pub_text = "—" if pub is None else f"{pub:.1f}"
            row.append(pub_text + (" / not run" if s is None else f" / {_pct(s['transfer'])} / {_pct(s['adaptive'])}"))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def details_markdown(results: pd.DataFrame) -> str:
    """Every row of the finished cells (the tidy CSV's main columns), text columns without ``nan``."""
    if not len(results):
        return "(no finished cell)"
    shown = results.copy()
    for column in ("attack_library", "flags"):
        shown[column] = shown[column].fillna("")
    return format_table(shown, DETAIL_COLUMNS, markdown=True)


#: Points by which the adaptive number should fall below the transfer one for the check to pass.
CHECK_MARGIN = 0.10


def checks_markdown(study: Study, results: pd.DataFrame) -> str:
    """For each cell of a defense: does the adaptive number fall well below the transfer one (what the
    literature predicts of a defense evaluated by transfer only), and if not, why, from the numbers."""
    lines = []
    for defense in study.defenses:
        for attack in study.attacks:
            s = summarize(results, defense, attack) if len(results) else None
            if s is None or defense.endswith("none"):
                continue
            t, a, c = s["transfer"], s["adaptive"], s["clean"]
            if "failed_training" in s["flags"]:
                verdict = "no defense was evaluated: a model behind it did not learn (see Models)"
            elif math.isnan(t) or math.isnan(a):
                verdict = "no adaptive row ran (see Every row)" if math.isnan(a) else "no transfer row ran"
            elif t - a >= CHECK_MARGIN:
                verdict = f"adaptive {_pct(a)} % is {100 * (t - a):.1f} points below transfer {_pct(t)} %"
            elif t <= 0.05 + 0.05 * c:
                verdict = (
                    f"not {100 * CHECK_MARGIN:.0f} points apart: the transfer attack alone already leaves "
                    f"{_pct(t)} % (of {_pct(c)} % clean), nothing is left for an adaptive attack to take"
                )
            else:
                verdict = (
                    f"adaptive {_pct(a)} % vs transfer {_pct(t)} %: the defense holds against the adaptive "
                    "attacks that ran"
                )
            flags = ", ".join(f"{k} {v:.3g}" for k, v in sorted(s["flags"].items()))
            lines.append(f"- {defense} × {attack}: {verdict}" + (f"; flags: {flags}" if flags else ""))
    return "\n".join(lines) or "(no finished cell of a defense)"


def cards_of(study: Study, metas: list[dict]) -> dict[str, dict]:
    """Every trained model's card (the cells' undefended twins, defended models, generators; the study's
    own), keyed by a name that says which; the training history is left out."""
    cards: dict[str, dict] = {}

    seen: set[str] = set()

    def add(name: str, card: dict | None) -> None:
        if card and card.get("sha256", name) not in seen:  # one model, one card, under its first name
            seen.add(card.get("sha256", name))
            cards.setdefault(name, {k: v for k, v in card.items() if k != "history"})

    for meta in metas:
        add(f"undefended {meta.get('dataset')} {meta.get('model')}", meta.get("undefended_card"))
        for library, card in (meta.get("cards") or {}).items():
            add(f"{meta['defense'].get('defense')} ({library}) {meta.get('dataset')}", card)
        if meta.get("generator_card"):
            card = meta["generator_card"]
            add(f"generator {card.get('generator')} {card.get('dataset')}", card)
    for name, card in study.cards().items():
        add(name, card)
    return cards


def models_markdown(cards: dict[str, dict]) -> str:
    """One line per trained model: its final clean accuracy (a classifier's on the test split, a generator's
    reconstruction error), and whether it learned (:mod:`zoo.training_check`)."""
    lines = []
    for name, card in cards.items():
        check = check_card(card)
        if card.get("kind") == "generator":
            what = f"test reconstruction error {card.get('test_reconstruction', math.nan):.3f}"
        else:
            what = f"clean test accuracy {_pct(card.get('accuracy', math.nan))} %"
        verdict = f" — **did not learn** ({'; '.join(check.reasons)})" if check.failed else ""
        lines.append(f"- {name}: {what}{verdict}")
    return "\n".join(lines) or "(no trained model)"


def save_bars(study: Study, results: pd.DataFrame, path: Path) -> Path:
    """Transfer, adaptive and worst-case robust accuracy of every cell (and the published number)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values, published = [], [], []
    for defense in study.defenses:
        for attack in study.attacks:
            s = summarize(results, defense, attack) if len(results) else None
            if s is None:
                continue
            labels.append(f"{defense}\n× {attack}")
            values.append([s["transfer"], s["adaptive"], s["worst"]])
            pub = study.published.get((defense, attack))
            published.append(math.nan if pub is None else pub / 100)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels) + 2), 4))
    width = 0.27
    for i, (name, color) in enumerate(
        [("transfer (as the study)", "tab:blue"), ("adaptive", "tab:red"), ("worst case", "black")]
    ):
        ax.bar(
            [j + (i - 1) * width for j in range(len(labels))], [v[i] for v in values], width, label=name, color=color
        )
    if any(not math.isnan(p) for p in published):
        ax.scatter(
            range(len(labels)), published, marker="*", s=120, color="gold", edgecolor="k", label="published", zorder=3
        )
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("robust accuracy")
    ax.set_title(study.title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def save_curves(study: Study, results: pd.DataFrame, curves: pd.DataFrame, path: Path) -> Path:
    """Robust accuracy vs eps per defense: minimal-norm attacks' curves (adaptive: the lowest over the rows on
    the system, solid; transfer, dashed), budget attacks as points at their eps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(study.attacks)
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.4), squeeze=False)
    colors = dict(zip(study.defenses, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, attack in zip(axes[0], attacks):
        curve = curves[curves["study_attack"] == attack] if len(curves) else curves
        rows = results[(results["study_attack"] == attack) & (results["status"] == "ok")] if len(results) else results
        for defense in study.defenses:
            color = colors.get(defense)
            if len(curve):
                c = curve[curve["study_defense"] == defense]
                for modes, style, name in ((ON_SYSTEM, "-", "adaptive"), (("transfer",), "--", "transfer")):
                    part = c[c["mode"].isin(modes)]
                    if len(part):
                        line = part.groupby("eps")["robust_acc"].min()
                        ax.plot(line.index, line.values, style, color=color, label=f"{defense} ({name})")
            elif len(rows):
                r = rows[(rows["study_defense"] == defense) & rows["eps"].notna()]
                for modes, marker, name in ((ON_SYSTEM, "o", "adaptive"), (("transfer",), "x", "transfer")):
                    part = r[r["mode"].isin(modes)]
                    if len(part):
                        points = part.groupby("eps")["robust_acc"].min()
                        ax.plot(points.index, points.values, marker, color=color, label=f"{defense} ({name})")
        ax.set_title(attack, fontsize=9)
        ax.set_xlabel("eps")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(0, 1)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle(study.title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def audits_markdown(out: Path) -> str:
    """The audits of the study's defended systems (``cli.py audit --study``: ``<out>/audits/*-card.json``), one
    line each: the system, clean accuracy, AutoAttack, the worst case, reliable or not."""
    cards = sorted((out / "audits").glob("*-card.json")) if (out / "audits").is_dir() else []
    if not cards:
        return "None yet: `cli.py audit --study NAME --cell CELL` audits a cell's defended system; its card goes here."
    lines = ["| cell | audited system | threat | n | clean % | AutoAttack % | worst case % | unreliable | card |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for path in cards:
        card = json.loads(path.read_text())
        cell = path.name[: -len("-card.json")]
        threat = f"{card.get('threat_model')} {card.get('eps')}"
        lines.append(
            f"| {cell} | {card.get('name')} | {threat} | {card.get('n')} | {card.get('clean_acc')} | "
            f"{card.get('autoattack_acc')} | {card.get('external')} | {'yes' if card.get('unreliable') else 'no'} | "
            f"`audits/{cell}.md` |"
        )
    return "\n".join(lines)


def write_report(study: Study, out: str | Path) -> list[Path]:
    """Write the report files (:data:`REPORT_FILES`) of the finished cells in ``out``; returns their paths."""
    out = Path(out)
    results, curves, metas = collect(study, out)
    cards = cards_of(study, metas)
    files = {k: out / v for k, v in REPORT_FILES.items()}
    finished = [c.name for c in study.cells if done_marker(out, c).exists()]
    missing = [c.name for c in study.cells if c.name not in finished]
    revisions = sorted({str(m.get("git_revision")) for m in metas})
    header = [
        f"# {study.title}",
        "",
        f"advbridge {', '.join(revisions) or '?'}; study `{study.name}`; {len(finished)} of {len(study.cells)} "
        "cells finished" + (f" (not yet: {', '.join(missing)})" if missing else ""),
        "",
        *[f"- {note}" for note in study.notes],
        "",
        "Each cell: robust accuracy in % as **transfer / adaptive / worst case** (transfer: the attack computed "
        "on the undefended model, as the study did; adaptive: the lowest over the attacks run on the defended "
        "system; worst case: per sample over every attack and library), then ⚑ and the gradient-masking flags "
        "raised in that cell with their largest value.",
        "",
        pivot_markdown(study, results),
        "",
        "## Next to the published numbers",
        "",
        published_markdown(study, results),
        "## Every row",
        "",
        details_markdown(results),
        "",
        "## Checks",
        "",
        checks_markdown(study, results),
        "",
        "Flag thresholds: "
        + ", ".join(f"`{n}` {'<' if n in RAISED_BELOW else '>'} {v:g}" for n, v in _thresholds().items()),
        "",
        "## Models",
        "",
        models_markdown(cards),
        "",
        "## Audits of its defended systems",
        "",
        audits_markdown(out),
        "",
    ]
    paths = [
        atomic_write_text(files["results"], results.to_csv(index=False)),
        atomic_write_text(files["eps"], curves.to_csv(index=False)),
        atomic_write_text(files["report"], "\n".join(header)),
        atomic_write_text(files["cards"], json.dumps(cards, indent=1, sort_keys=True, default=str) + "\n"),
    ]
    if len(results):
        paths.append(save_bars(study, results, files["bars"]))
        paths.append(save_curves(study, results, curves, files["curves"]))
    return paths


def _thresholds() -> dict[str, float]:
    from advbridge.experiments.flags import THRESHOLDS

    return {n: THRESHOLDS[n] for n in FLAG_COLUMNS[:-1]}
