"""Measured deviations: the paper configuration with one choice changed at a time.

Usage:
    python docs/scripts/ablations.py run NAME [NAME ...] [--seeds 0 1 2] [--cores 2] [--methods svae_plus ivae]
    python docs/scripts/ablations.py collect        # -> results/ablations/ablations.tsv
    python docs/scripts/ablations.py table baseline scvi_layers --methods ivae svae_plus   # any methods side by side
    python docs/scripts/ablations.py list

Each ablation is the Table 1 setting of ``config/paper.yaml`` (the ``paper`` simulation,
its training and transfer protocol) restricted to ``METHODS`` at one fixed setting each
(``FIXED``), with one choice changed (``ABLATIONS``). ``run`` writes its configuration to
``results/ablations/<name>/config_<methods>.yaml`` and runs the real pipeline on it (Snakemake, up to
the runs' ``metrics.json``: training, the transfer protocol with the held-out I-NLL, and the
evaluation); ``collect`` gathers every finished run of every ablation into one table, which
``docs/scripts/write_table1.py`` turns into the deviation table of ``docs/table1.md``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from sparseshift.data import load_latents  # noqa: E402
from sparseshift.layout import RUN  # noqa: E402
from sparseshift.methods import METHODS as ALL_METHODS, REGISTRY  # noqa: E402
from sparseshift.metrics import informative_latents  # noqa: E402
from sparseshift.plan import tag  # noqa: E402

OUT = REPO / "results" / "ablations"
# The methods an ablation trains by default, each at one setting (sVAE+ only: each ablation is
# 3 runs with the transfer protocol, about 15 minutes of a 2-core machine); `--methods` adds
# others to the same folders.
METHODS = ["svae_plus"]
# sVAE+ at the paper's recommendation alpha = K (the number of perturbations), independent of the selection.
FIXED = {"alpha": [100], "beta": [8], "lambda": [10.0]}
# Every ablation, the baseline included, is measured at the released code's 250 cells per
# perturbation (half the cost of the paper's 500, which config/paper.yaml uses): `cells500`
# is the step from there to the paper's count.
BASE = {"simulation": {"cells_per_perturbation": 250}}
# name -> (what changes, config overrides merged into the ablation's configuration;
# "simulation" overrides apply to the `paper` simulation setting)
ABLATIONS = {
    "baseline": ("the pipeline's choices (config/paper.yaml) at 250 cells per perturbation", {}),
    "cells500": ("500 cells per perturbation (the paper's text, config/paper.yaml) instead of 250 (released code)",
                 {"simulation": {"cells_per_perturbation": 500}}),
    "log1p_input": ("encoder input log1p counts (paper, released code) instead of standardised log1p",
                    {"model": {"standardize_input": False}}),
    "scvi_layers": ("BatchNorm in encoder and decoder, dropout 0.1 in the encoder (released code)",
                    {"model": {"batch_norm": True, "dropout": 0.1}}),
    "epochs500": ("500 training epochs (the paper's grid) instead of 300",
                  {"train": {"epochs": 500}}),
    "text_emission": ("the paper text's emission: softmax over genes, 10^5 counts per cell",
                      {"simulation": {"softmax_over": "genes", "library_size": 100000}}),
    "with_replacement": ("targets drawn with replacement (released code)",
                         {"simulation": {"target_sampling": "with_replacement"}}),
    "released_ivae": ("iVAE as released: the sVAE module with lambda = 0, an unpenalised Gumbel-sigmoid "
                      "mask (run with --methods svae)", {"hyperparameters": {"lambda": [0.0]}}),
    "released_optimiser": ("the released code's optimiser: Adam eps 0.01 and weight decay 1e-6 (scvi-tools' "
                           "training plan) for every method, sVAE+'s loss x the number of training cells",
                           {"train": {"adam_eps": 0.01, "weight_decay": 1e-6, "loss_times_cells": ["svae_plus"]}}),
    # Not deviations: beta below the paper's grid {8, 10, 30}, to place the paper's beta-VAE
    # (R^2 as high as the VAE's, I-NLL far worse) against what this model gives at each beta.
    "beta2": ("beta-VAE at beta = 2 (run with --methods beta_vae)", {"hyperparameters": {"beta": [2.0]}}),
    "beta4": ("beta-VAE at beta = 4 (run with --methods beta_vae)", {"hyperparameters": {"beta": [4.0]}}),
}
# Ablations whose runs of one method stand for another method of the baseline: the released
# iVAE is this pipeline's sVAE at lambda = 0, compared with the baseline's iVAE.
STANDS_FOR = {"released_ivae": {"svae": "ivae"}}


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def ablation_config(name: str, seeds: list[int], methods: list[str] = METHODS, latents_only: bool = False) -> dict:
    """``config/paper.yaml``, Table 1 setting only, at ``BASE``, ``METHODS`` at ``FIXED``, one change;
    ``latents_only``: no transfer protocol (training and evaluation of the latents and graph)."""
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    _, overrides = ABLATIONS[name]
    overrides = merge(merge(BASE, {"simulation": {"transfer": False}} if latents_only else {}), overrides)
    sim = next(s for s in paper["simulations"] if s["name"] == "paper")
    sim = {k: v for k, v in sim.items() if k not in ("hyperparameters", "methods")}
    sim = merge(sim, overrides.pop("simulation", {}))
    cfg = {k: paper[k] for k in ("device", "train", "transfer")}
    # one model per job in every ablation: the released code's BatchNorm cannot be stacked,
    # and the baseline must draw its random numbers the same way as the changed runs
    cfg.update(seeds=seeds, methods=methods, hyperparameters=FIXED, simulations=[sim],
               stack_models=1, results=str(OUT / name))
    return merge(cfg, overrides)


@functools.cache
def run_tags(name: str) -> dict[str, str]:
    """The run folder of each method in ablation ``name`` (its one fixed setting), named as the
    pipeline names it (``sparseshift.plan.tag``)."""
    cfg = ablation_config(name, [0], list(ALL_METHODS))
    n_latent, fixed = cfg["simulations"][0]["n_latent"], cfg["hyperparameters"]
    return {m.id: tag(n_latent, {m.hyperparameter: fixed[m.hyperparameter][0]} if m.hyperparameter else {})
            for m in REGISTRY.values()}


def run_dir(name: str, seed: int, method: str, run_name: str) -> Path:
    """The folder of one run of ablation ``name``, laid out as the pipeline lays out its runs."""
    return OUT / name / RUN.format(arm="simulation", dataset="paper", seed=seed, method=method, hp=run_name)


def run(name: str, seeds: list[int], cores: int, methods: list[str] = METHODS, latents_only: bool = False) -> None:
    cfg = ablation_config(name, seeds, methods, latents_only)
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"config_{'_'.join(methods)}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tags = run_tags(name)
    targets = [f"{run_dir(name, s, m, tags[m])}/metrics.json" for s in seeds for m in methods]
    # The default config first (the Snakefile's configfile is read relative to the working
    # directory), then the paper's, then the ablation's: `simulations` is replaced as a whole.
    cmd = ["snakemake", "--cores", str(cores), "--rerun-incomplete", "--directory", str(REPO),
           "--configfile", str(REPO / "config" / "paper.yaml"), str(path), "--", *targets]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def collect() -> pd.DataFrame:
    rows = []
    for name in ABLATIONS:
        for path in sorted((OUT / name).glob("simulation/paper/seed*/*/*/metrics.json")):
            rows.append({"ablation": name, **json.loads(path.read_text())})
    df = pd.DataFrame(rows)
    out = OUT / "ablations.tsv"
    df.to_csv(out, sep="\t", index=False)
    print(f"{len(df)} runs -> {out}")
    return df


def at_fixed_settings(df: pd.DataFrame) -> pd.DataFrame:
    """The runs of ``collect``'s table at their ablation's fixed setting (``run_tags``), a method
    that stands for another (``STANDS_FOR``) relabelled as that one. Rows of an ablation this
    version does not list (a table collected by another branch's script) are left out."""
    tags = {name: run_tags(name) for name in ABLATIONS}
    keep = df[[a in tags and tags[a][m] == r for a, m, r in zip(df["ablation"], df["method"], df["run"])]]
    return keep.assign(method=[STANDS_FOR.get(a, {}).get(m, m) for a, m in zip(keep["ablation"], keep["method"])])


def informative(df: pd.DataFrame, min_variance: float = 0.01) -> pd.Series:
    """Per run of ``collect``'s table, how many of its latents carry information: posterior-mean
    variance above ``min_variance`` (UDR's active latents, config key ``selection.min_variance``)."""
    counts = []
    for name, seed, method, run_name in zip(df["ablation"], df["seed"], df["method"], df["run"]):
        path = run_dir(name, seed, method, run_name) / "latents.npz"
        counts.append(int(informative_latents(load_latents(path), min_variance).sum()) if path.exists() else np.nan)
    return pd.Series(counts, index=df.index, dtype=float)


def table(df: pd.DataFrame, names: list[str], methods: list[str]) -> str:
    """The methods side by side per ablation (markdown): mean Pearson MCC, R², informative latents,
    I-NLL and validation ELBO over the seeds every method of the row finished; with two methods,
    the I-NLL difference (second − first) per seed. A method that an ablation did not run is
    missing from its row ("–"), except where the ablation stands for it (``STANDS_FOR``): then
    the methods it leaves unchanged come from the baseline."""
    values = {"MCC": ("mcc_pearson", ".3f"), "R²": ("r2", ".2f"), "informative latents": ("informative", ".1f"),
              "I-NLL": ("inll", ".2f"), "validation ELBO": ("elbo_val", ".2f")}
    names_of = " / ".join(methods)
    header = ["ablation", "seeds", *(f"{title} {names_of}" for title in values)]
    if len(methods) == 2:
        header.append(f"I-NLL {methods[1]} − {methods[0]} per seed")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    df = df[df["ablation"].isin([*names, "baseline"])]
    df = at_fixed_settings(df.assign(informative=informative(df)))
    for name in names:
        runs, label = df[(df["ablation"] == name) & df["method"].isin(methods)], name
        if name in STANDS_FOR:
            changed = set(STANDS_FOR[name].values())
            base = df[(df["ablation"] == "baseline") & df["method"].isin(set(methods) - changed)]
            runs, label = pd.concat([runs, base]), f"{name} ({', '.join(sorted(set(methods) - changed))}: baseline)"
        wide = runs.pivot_table(index="seed", columns="method", values=[key for key, _ in values.values()],
                                dropna=False)
        wide = wide.dropna(subset=[("mcc_pearson", m) for m in set(runs["method"])])  # seeds every method finished
        if wide.empty:
            continue
        mean = wide.mean()

        def cells(key, fmt, mean=mean):
            return " / ".join(f"{mean[(key, m)]:{fmt}}" if (key, m) in mean and pd.notna(mean[(key, m)]) else "–"
                              for m in methods)

        row = [label, ", ".join(map(str, wide.index)), *(cells(key, fmt) for key, fmt in values.values())]
        if len(methods) == 2:
            both = all(("inll", m) in wide for m in methods)
            row.append(" / ".join(f"{v:+.2f}" for v in wide[("inll", methods[1])] - wide[("inll", methods[0])])
                       if both else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def paired(df: pd.DataFrame, name: str, methods: list[str]) -> str:
    """Ablation ``name`` against the baseline, per method and seed (markdown): baseline → changed
    (means over the seeds both finished), the per-seed differences and on how many seeds the
    change is higher."""
    df = at_fixed_settings(df[df["ablation"].isin([name, "baseline"])])
    keys = {"Pearson MCC": "mcc_pearson", "R²": "r2", "graph F1 (|r|, training)": "graph_f1", "I-NLL": "inll"}
    lines = ["| method | metric | seeds | baseline → " + name + " | per seed (changed − baseline) | higher |",
             "|---|---|---|---|---|---|"]
    for method in methods:
        for title, key in keys.items():
            if key not in df:
                continue
            wide = df[df["method"] == method].pivot_table(index="seed", columns="ablation", values=key).dropna()
            if wide.empty or name not in wide or "baseline" not in wide:
                continue
            diff = wide[name] - wide["baseline"]
            lines.append(f"| {method} | {title} | {', '.join(map(str, wide.index))} | {wide['baseline'].mean():.3f} → "
                         f"{wide[name].mean():.3f} | {' / '.join(f'{d:+.3f}' for d in diff)} | {(diff > 0).sum()} of {len(diff)} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("names", nargs="+", choices=list(ABLATIONS))
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--cores", type=int, default=2)
    r.add_argument("--methods", nargs="+", default=METHODS, choices=ALL_METHODS)
    r.add_argument("--latents-only", action="store_true", help="no transfer protocol (no I-NLL)")
    sub.add_parser("collect")
    pa = sub.add_parser("paired")
    pa.add_argument("name", choices=list(ABLATIONS))
    pa.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    pa.add_argument("--into", type=Path, help="markdown file whose block <!-- ablation-NAME --> is replaced")
    t = sub.add_parser("table")
    t.add_argument("names", nargs="+", choices=list(ABLATIONS))
    t.add_argument("--methods", nargs="+", default=["ivae", "svae_plus"], choices=ALL_METHODS)
    sub.add_parser("list")
    args = ap.parse_args(argv)
    if args.command == "run":
        for name in args.names:
            run(name, args.seeds, args.cores, args.methods, args.latents_only)
    elif args.command == "collect":
        collect()
    elif args.command == "paired":
        body = paired(pd.read_csv(OUT / "ablations.tsv", sep="\t"), args.name, args.methods)
        if args.into:
            import blocks
            blocks.replace(args.into, f"ablation-{args.name}", body)
        print(body)
    elif args.command == "table":
        print(table(pd.read_csv(OUT / "ablations.tsv", sep="\t"), args.names, args.methods))
    else:
        for name, (what, overrides) in ABLATIONS.items():
            print(f"{name:18s} {what}  {overrides}")


if __name__ == "__main__":
    sys.exit(main())
