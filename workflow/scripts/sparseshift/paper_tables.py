"""The paper tables (docs/table1.md): Table 1 of the paper configuration (the selected models
and every setting), the selection per seed, the checks against the acceptance bars, the signed
F1 over the latents' sign choices, the default configuration's Table 1, the measured deviations
and the β curve (``sparseshift.deviations``).

Every number is read from the runs' ``simulation/summary.tsv`` (one row per run) and
``simulation/selection.tsv`` of a run of ``config/paper.yaml`` and of ``config/config.yaml``,
and from the ablations' table; nothing is typed in. The code that produced them is named from
the ``code_version`` every run records (training, transfer, evaluation), and compared with the
repository's HEAD. Written by the workflow's rule ``paper_tables``
(``workflow/scripts/paper_tables.py``).
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .ablations import FIXED, OUT, REPO
from .deviations import beta_curve, deviations
from .io import atomic_path, write_tsv
from .markdown import md_table, mean_sd, with_blocks
from .methods import DISPLAY_NAMES as DISPLAY
from .summary import load_metrics, with_selection

log = logging.getLogger(__name__)
ORDER = list(DISPLAY)
# column title -> (summary column, decimals)
COLUMNS = {
    "Pearson MCC": ("mcc_pearson", 3),
    "Spearman MCC": ("mcc_spearman", 3),
    "R²": ("r2", 2),
    "F1 \\|r\\| train": ("graph_f1", 3),
    "F1 \\|r\\| all": ("graph_f1_all", 3),
    "precision signed": ("graph_precision_signed", 2),
    "recall signed": ("graph_recall_signed", 2),
    "F1 signed": ("graph_f1_signed", 3),
    "ELBO (val)": ("elbo_val", 2),
    "I-NLL": ("inll", 2),
    "mask density": ("mask_density", 3),
    "UDR": ("udr", 3),
}
VERSION_COLUMNS = ["train_code_version", "transfer_code_version", "code_version"]


def git(*args) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def verified_runs(report: dict) -> str:
    """What a report of ``docs/scripts/verify_runs.py`` showed, in words."""
    compared = report.get("compared", "weights, latents, history, metrics")
    return (f"{report['identical']} of {report['runs']} runs re-run ({', '.join(report['methods'])}) identical to "
            f"the recorded ones, {compared} (`docs/scripts/verify_runs.py`)")


def verification_note(path: Path) -> str:
    """A sentence for a table whose runs a report of ``verify_runs.py`` re-ran: the commit it
    re-ran them at and whether ``workflow/`` and ``config/`` changed between it and HEAD."""
    report = json.loads(path.read_text())
    moved = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", report["head"], "HEAD", "--",
                            "workflow", "config"]).returncode
    since = ("**`workflow/` or `config/` changed since**" if moved else
             f"`workflow/` and `config/` identical at HEAD ({git('rev-parse', 'HEAD')[:12]})")
    return f"Verified at `{report['head'][:12]}`: {verified_runs(report)}; {since}."


def provenance(summary: pd.DataFrame, verification: Path | None = None) -> tuple[str, str]:
    """The commit(s) the runs were produced by, and whether HEAD's workflow/ and config/ equal
    theirs. Several commits are one version of the pipeline when their workflow/ and config/
    are identical (a run resumed after a commit that touched only docs/, say). When they differ,
    ``verification`` (the ``verification.json`` of ``verify_runs.py``) made at HEAD is the
    evidence that HEAD reproduces a sample of the runs."""
    versions = sorted({v for col in VERSION_COLUMNS if col in summary for v in summary[col].dropna().astype(str)})
    if not versions or any(v.endswith("+modified") or v == "unknown" for v in versions):
        return ", ".join(f"`{v}`" for v in versions) or "unknown", "not a clean commit: these numbers cannot be tied to one version"
    try:
        head = git("rev-parse", "HEAD")
        differ = [v for v in versions
                  if subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", v, "HEAD", "--", "workflow", "config"]).returncode]
    except (OSError, subprocess.CalledProcessError):
        return ", ".join(versions), "HEAD could not be compared"
    named = ", ".join(f"`{v}`" for v in versions)
    if not differ:
        return named, f"`workflow/` and `config/` at HEAD ({head[:12]}) are identical to {'it' if len(versions) == 1 else 'each'}"
    changed = f"`workflow/` or `config/` at HEAD ({head[:12]}) differ from {', '.join(v[:12] for v in differ)}"
    checked = json.loads(verification.read_text()) if verification and verification.is_file() else {}
    if checked.get("head") == head and checked["runs"] and checked["identical"] == checked["runs"]:
        return named, f"{changed}; verified at HEAD: {verified_runs(checked)}"
    return named, (f"**{changed}, and no verification at HEAD: re-run the pipeline, or a sample of it with "
                   "`docs/scripts/verify_runs.py`**")


def method_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(_order=df["method"].map(ORDER.index)).sort_values(["_order", "run"]).drop(columns="_order")


def block(summary: pd.DataFrame, keys: list[str], paper: dict | None = None,
          columns: dict[str, tuple[str, int]] = COLUMNS) -> pd.DataFrame:
    """Mean ± sd over seeds of ``columns`` (title -> column, decimals) per ``keys`` (method and
    run, or method)."""
    rows = []
    for key, group in summary.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = {"model": DISPLAY[key[0]]}
        if "run" in keys:
            row["run"] = key[keys.index("run")]
        else:
            row["chosen"] = ", ".join(f"{r.split('_', 1)[-1]} ×{n}" for r, n in group["run"].value_counts(sort=False).items())
        row["seeds"] = group["seed"].nunique()
        row.update({title: mean_sd(group[col], d) for title, (col, d) in columns.items()})
        rows.append(row)
        if paper and DISPLAY[key[0]] in paper:
            ref = paper[DISPLAY[key[0]]]
            rows.append({"model": f"*{DISPLAY[key[0]]} (paper)*", "chosen": "", "seeds": "5",
                         "Pearson MCC": ref.get("Pearson MCC", ""), "Spearman MCC": ref.get("Spearman MCC", ""),
                         "R²": ref.get("R²", ""), "precision signed": ref.get("precision (signed)", ""),
                         "recall signed": ref.get("recall (signed)", ""), "F1 signed": ref.get("F1 (signed)", ""),
                         "I-NLL": ref.get("I-NLL", "")})
    return pd.DataFrame(rows).fillna("")


def selection_table(selection: pd.DataFrame) -> pd.DataFrame:
    swept = selection[selection["candidates"] > 1]
    rows = []
    for (method, seed), group in swept.groupby(["method", "seed"], sort=False):
        cells = [f"{'**' if s else ''}{r.split('_', 1)[-1]} {u:.3f}{'**' if s else ''}"
                 for r, u, s in zip(group["run"], group["udr"], group["selected"])]
        rows.append({"model": DISPLAY[method], "seed": seed, "UDR of each candidate (selected in bold)": ", ".join(cells)})
    return pd.DataFrame(rows)


def checks(selected: pd.DataFrame) -> list[str]:
    """The issue's acceptance bars, computed from the selected block."""
    means = selected.groupby("method")[["mcc_pearson", "graph_f1_signed", "graph_f1_all", "inll"]].mean()
    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"- {'✅' if ok else '❌'} {text}")

    if "svae_plus" in means.index:
        s = means.loc["svae_plus"]
        line(s["mcc_pearson"] >= 0.88, f"selected sVAE+ Pearson MCC {s['mcc_pearson']:.3f} ≥ 0.88")
        line(s["graph_f1_signed"] >= 0.51, f"selected sVAE+ F1 signed {s['graph_f1_signed']:.3f} ≥ 0.51")
        line(s["graph_f1_all"] >= 0.75, f"selected sVAE+ F1 |r| all {s['graph_f1_all']:.3f} ≥ 0.75")
    if {"svae_plus", "svae", "ivae", "vae"} <= set(means.index):
        m = means["mcc_pearson"]
        base = max(m["ivae"], m["vae"])
        line(m["svae_plus"] - m["svae"] >= 0.05 and m["svae"] - base >= 0.05,
             f"MCC ordering sVAE+ {m['svae_plus']:.3f} > sVAE {m['svae']:.3f} > max(iVAE, VAE) {base:.3f}, "
             "each step ≥ 0.05")
    if "inll" in means and means["inll"].notna().any():
        best = means["inll"].idxmin()
        line(best == "svae_plus", "lowest mean I-NLL: " + ", ".join(
            f"{DISPLAY[k]} {v:.2f}" for k, v in means["inll"].sort_values().items()))
    return out


def sign_block(flips: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """Per method, the selected runs' signed F1 beside its expectation over the learned latents'
    equally likely sign choices (``docs/scripts/sign_flips.py``). The ± of that expectation is
    the sd of the seeds' mean over their independent sign choices, sqrt(sum of sd²) / seeds."""
    keys = ["method", "setting", "seed"]
    got = flips.merge(selected.rename(columns={"run": "setting"})[keys], on=keys)
    rows = []
    for method in [m for m in ORDER if m in set(got["method"])]:
        g = got[got["method"] == method]
        rows.append({
            "model": DISPLAY[method], "seeds": len(g), "F1 signed (the runs')": f"{g['f1_signed'].mean():.3f}",
            "F1 signed, mean over sign choices": f"{g['sign_mean'].mean():.3f} ± "
                                                 f"{np.sqrt((g['sign_sd'] ** 2).sum()) / len(g):.3f}",
            "one run's sd over sign choices": f"{g['sign_sd'].mean():.3f}",
            "share of a run's sign choices ≥ 0.51": f"{g['share_at_paper'].mean():.2f}",
            "F1 \\|r\\| all": f"{g['f1_aligned'].mean():.3f}",
        })
    return pd.DataFrame(rows)


def true_density(folder: Path, simulation: str) -> str:
    """Share of perturbation-latent pairs that are true targets, per seed's dataset."""
    import anndata

    values = []
    for path in sorted((folder / "simulation" / simulation).glob("seed*/data.h5ad")):
        targets = np.asarray(anndata.read_h5ad(path, backed="r").uns["targets"])
        values.append(f"{(targets != 0).mean():.3f}")
    return ", ".join(values) or "–"


def read(folder: Path, simulation: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str] | None:
    """The arm's ``summary.tsv`` and ``selection.tsv``; while the workflow has not written them
    yet (other settings still running), the same tables built from the finished runs'
    ``metrics.json`` of ``simulation`` with the functions of the summarize rule. The third
    item is a note for the document: empty for the workflow's own tables, else what is partial."""
    summary, selection = folder / "simulation" / "summary.tsv", folder / "simulation" / "selection.tsv"
    if summary.exists():
        return pd.read_csv(summary, sep="\t"), pd.read_csv(selection, sep="\t"), ""
    paths = sorted((folder / "simulation" / (simulation or "*")).glob("seed*/*/*/metrics.json"))
    if simulation is None or not paths:
        return None
    log.warning("%s not written yet: built from %d metrics.json of simulation %s", summary, len(paths), simulation)
    table, chosen = with_selection(load_metrics(paths))
    seeds = table["seed"].nunique()
    short = table.groupby(["method", "run"])["seed"].nunique()
    short = short[short < seeds]
    note = (f"**Partial results.** The workflow has not finished this configuration (no `summary.tsv` yet): "
            f"the tables below are built from the {len(paths)} runs whose `metrics.json` exist, with the "
            "summarize rule's own functions, and the selection chooses among the candidates finished so far.")
    if not short.empty:
        note += " Settings with fewer seeds than the others: " + ", ".join(
            f"{DISPLAY[m]} {r} ({n})" for (m, r), n in short.items()) + "."
    return table, chosen, note


def table_or_none(path: Path | None) -> pd.DataFrame | None:
    return pd.read_csv(path, sep="\t") if path is not None and Path(path).exists() else None


def shown(path: Path) -> Path:
    """A results folder as the document names it: relative to the repository when inside it."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def document(paper: Path, paper_values: dict, default_results: Path | None = None, ablations: Path | None = None,
             particles: Path | None = None, sign_flips: Path | None = None, verification: Path | None = None,
             simulation: str = "paper", root: Path = OUT, blocks: tuple[str, ...] = (),
             written_by: str = "`python docs/scripts/write_table1.py`") -> tuple[str, dict[str, pd.DataFrame]]:
    """The markdown of the paper tables and its tables by name (``table1``: the selected models,
    ``signs``, ``settings``, ``selection``, ``deviations``). ``paper`` and ``default_results``:
    the ``results`` folders of the paper and the default configurations; ``ablations``,
    ``particles``, ``sign_flips``: the tables of the ablations (``collect_ablations``), of
    ``docs/scripts/iwelbo_particles.py`` and ``docs/scripts/sign_flips.py`` (default:
    PAPER/simulation/sign_flips.tsv), each left out when absent; ``verification``: the report of
    ``docs/scripts/verify_runs.py``; ``paper_values``: the published Table 1
    (``paper_table1`` of ``config/paper.yaml``); ``root``: the ablations' folder;
    ``blocks``: the named blocks of the file this one replaces, kept at its end;
    ``written_by``: the command named as the writer."""
    got = read(paper, simulation)
    if got is None:
        raise FileNotFoundError(f"{paper}/simulation/summary.tsv: no such file (run the paper configuration first)")
    summary, selection, partial = got
    summary = method_rows(summary[summary["simulation"] == simulation])
    selected = summary[summary["selected"].astype(bool)]
    commit, same = provenance(summary, verification)
    ablations, particles = table_or_none(ablations), table_or_none(particles)
    flips_path = sign_flips or paper / "simulation" / "sign_flips.tsv"
    flips = table_or_none(flips_path)
    pieces = {"table1": block(selected, ["method"], paper_values),
              "signs": sign_block(flips, selected) if flips is not None else pd.DataFrame(),
              "settings": block(summary, ["method", "run"]),
              "selection": selection_table(selection[selection["simulation"] == simulation]),
              "deviations": deviations(ablations, selected, summary, particles, root)}

    lines = [
        "# Table 1, regenerated",
        "",
        f"Written by {written_by} on {datetime.date.today()} from "
        f"`{shown(paper)}` "
        f"(simulation `{simulation}`: p = {', '.join(str(int(p)) for p in sorted(summary['n_latent'].unique()))}, "
        f"{summary['seed'].nunique()} seeds). **Code: commit {commit}** (recorded by every run's training, "
        f"transfer and evaluation); {same}. Machine of this write: {platform.processor() or platform.machine()}, "
        f"{platform.system()}. Every number below is computed from the results by this script; none is typed in.",
        "",
        *([partial, ""] if partial else []),
        "**Graph conventions.** *F1 \\|r\\| train*: learned latents matched to the true ones by |Pearson "
        "correlation| (the MCC matching), scored on the 80 training perturbations. *F1 \\|r\\| all*: the same "
        "matching, all 100 perturbations, the 20 held-out ones (never trained, no learned mask) counted as misses. "
        "*signed*: the released code's convention (entry_points/demo.py of Genentech/sVAE): latents matched by the "
        "*signed* correlation, all 100 perturbations with held-out ones as misses; a sign-flipped latent is then "
        "matched to another column. The paper's precision / recall / F1 are comparable to the signed columns "
        "only. I-NLL: −IWELBO per held-out cell (5,000 particles) after the three-step transfer protocol; the paper's "
        "values come from another emission (see `config/paper.yaml`) and are not on the same scale.",
        "",
        f"True target density of the datasets (seeds in order): {true_density(paper, simulation)}.",
        "",
        "## Selected models (UDR), mean ± sd over seeds",
        "",
        "Per seed, each method's setting of highest UDR among its candidates (`selection.tsv`); the paper's "
        "published values in italics.",
        "",
        md_table(pieces["table1"]),
        "",
        "### Checks",
        "",
        *checks(selected),
        "",
        "### The signed F1 and the latents' signs",
        "",
        "Negating a learned latent (its encoder mean, the decoder's weights on it and the shifts μ_a on it) "
        "gives a model of exactly the same ELBO, and training from the mirrored initialisation and noise (as likely: "
        "every initial and noise distribution is symmetric) reaches it step for step; so each latent's sign is an arbitrary "
        "outcome of the initialisation, either way equally likely. The |r| metrics ignore it; the "
        "signed F1 does not: one run's signed F1 is one draw over its 2^p sign choices. "
        f"`python docs/scripts/sign_flips.py {shown(paper)}` "
        "scores every sign choice of every selected run's latents (the run's own choice reproduces its "
        "`graph_f1_signed`): the mean over them is the signed F1 that the method's training gives in expectation.",
        "",
        md_table(pieces["signs"]) if flips is not None else
        f"(not computed: no `{flips_path.name}`; run `docs/scripts/sign_flips.py` on these results)",
        "",
        "## Every setting, mean ± sd over seeds",
        "",
        md_table(pieces["settings"]),
        "",
        "## Selection per seed",
        "",
        md_table(pieces["selection"]),
        "",
    ]
    default = read(default_results) if default_results is not None else None
    if default is not None:
        dsum, _, _ = default
        dsum = method_rows(dsum)
        dcommit, dsame = provenance(dsum)
        dsel = dsum[dsum["selected"].astype(bool)]
        lines += [
            "## The default configuration (config/config.yaml)",
            "",
            f"From `{shown(default_results)}`; "
            f"code: commit {dcommit}, {dsame}.",
            "",
            md_table(block(dsel, ["method"])),
            "",
            *checks(dsel)[-1:],
            "",
        ]
    lines += [
        "## Deviations from the paper and from the released code",
        "",
        "Measured effects: the ablations of `docs/scripts/ablations.py` (the Table 1 setting, one choice changed, "
        f"sVAE+ at α = {FIXED['alpha'][0]}, and sVAE (λ = {FIXED['lambda'][0]:g}), iVAE, VAE or β-VAE (β = {FIXED['beta'][0]}) "
        "where a row names them (`ablations.py run ... --methods ivae`; "
        "the released iVAE: `ablations.py run released_ivae --methods svae`), "
        "one model per job, same seeds; `baseline` is the pipeline's choice at the "
        "released code's 250 cells per perturbation, the base of every ablation); for the particle count, "
        "`docs/scripts/iwelbo_particles.py` (the same step-3 models scored with both counts); "
        "and, for the selection and the conventions, the paper run above.",
        "",
        md_table(pieces["deviations"]),
        "",
    ]
    if ablations is not None:
        lines += beta_curve(ablations, paper_values, root)
    # the sections of other runs (write_generalisation.py, ablations.py paired): kept
    return with_blocks("\n".join(lines), list(blocks)), pieces


def rule_inputs(paper: str, default: str, ablations: str) -> dict[str, str]:
    """The inputs of the rule ``paper_tables`` by name, from the results folders of the paper and
    the default configurations and of the ablations: their tables, the paper configuration, and
    the tables of the one-off probes where they exist (``docs/scripts/iwelbo_particles.py``,
    ``sign_flips.py``, ``verify_runs.py``)."""
    tables = {f"{name}_{table}": f"{folder}/simulation/{table}.tsv"
              for name, folder in (("paper", paper), ("default", default)) for table in ("summary", "selection")}
    probes = {"particles": f"{ablations}/iwelbo_particles.tsv", "sign_flips": f"{paper}/simulation/sign_flips.tsv",
              "verification": "results/verify/verification.json"}
    return {**tables, "ablations": f"{ablations}/ablations.tsv", "paper_config": "config/paper.yaml",
            **{name: path for name, path in probes.items() if Path(path).is_file()}}


def tables_from_files(inputs: dict[str, str], markdown_out: str, tables_out: list[str], written_by: str) -> None:
    """The rule ``paper_tables``: :func:`document` from the rule's named inputs (:func:`rule_inputs`;
    the results folders are those of the summaries and the ablations' table), written to
    ``markdown_out`` and, each table by its file name, to ``tables_out``."""
    paper, default = (Path(inputs[f"{name}_summary"]).parents[1] for name in ("paper", "default"))
    paper_values = yaml.safe_load(Path(inputs["paper_config"]).read_text()).get("paper_table1", {})
    probes = {name: Path(inputs[name]) if name in inputs else None for name in ("particles", "sign_flips", "verification")}
    text, tables = document(paper, paper_values, default, Path(inputs["ablations"]),
                            root=Path(inputs["ablations"]).parent, written_by=written_by, **probes)
    with atomic_path(markdown_out) as path:
        path.write_text(text)
    for out in tables_out:
        write_tsv(tables[Path(out).stem], out)
