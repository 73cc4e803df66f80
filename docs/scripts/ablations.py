"""Measured deviations: the paper configuration with one choice changed at a time
(``sparseshift.ablations``), from the command line.

Usage:
    python docs/scripts/ablations.py run NAME [NAME ...] [--seeds 0 1 2] [--cores 2] [--methods svae_plus ivae]
    python docs/scripts/ablations.py collect        # -> results/ablations/ablations.tsv
    python docs/scripts/ablations.py table baseline scvi_layers --methods ivae svae_plus   # any methods side by side
    python docs/scripts/ablations.py paired released_optimiser --methods ivae svae_plus --into docs/table1.md
    python docs/scripts/ablations.py list
    python docs/scripts/ablations.py configs        # (re)writes config/ablations/<name>.yaml

``run`` is the plain Snakemake run of the ablation's committed configuration on top of the
paper's (``snakemake --configfile config/paper.yaml config/ablations/NAME.yaml``), its methods
and seeds given with ``--config``, up to the runs' ``metrics.json``; ``--latents-only`` adds an
overlay without the transfer protocol (``results/ablations/NAME/latents_only.yaml``). ``collect``
is what the workflow's rule ``collect_ablations`` does.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from sparseshift import markdown  # noqa: E402
from sparseshift.ablations import (  # noqa: E402
    ABLATIONS, CONFIGS, METHODS, OUT, SEEDS, ablation_config, collect, config_text, metrics_paths, paired, run_dir,
    run_tags, table,
)
from sparseshift.methods import METHODS as ALL_METHODS  # noqa: E402


def run(name: str, seeds: list[int], cores: int, methods: list[str] = METHODS, latents_only: bool = False) -> None:
    configs = [REPO / "config" / "paper.yaml", CONFIGS / f"{name}.yaml"]
    if latents_only:  # `simulations` is a list, replaced as a whole: the ablation's, without transfer
        overlay = OUT / name / "latents_only.yaml"
        overlay.parent.mkdir(parents=True, exist_ok=True)
        sims = ablation_config(name, seeds, methods, latents_only=True)["simulations"]
        overlay.write_text(yaml.safe_dump({"simulations": sims}, sort_keys=False))
        configs.append(overlay)
    tags = run_tags(name)
    targets = [f"{run_dir(OUT, name, s, m, tags[m])}/metrics.json" for s in seeds for m in methods]
    cmd = ["snakemake", "--cores", str(cores), "--rerun-incomplete", "--directory", str(REPO),
           "--configfile", *map(str, configs),
           "--config", f"seeds=[{','.join(map(str, seeds))}]", f"methods=[{','.join(methods)}]", "--", *targets]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("names", nargs="+", choices=list(ABLATIONS))
    r.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
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
    sub.add_parser("configs", help="write config/ablations/<name>.yaml from the definitions")
    args = ap.parse_args(argv)
    if args.command == "run":
        for name in args.names:
            run(name, args.seeds, args.cores, args.methods, args.latents_only)
    elif args.command == "collect":
        df = collect(metrics_paths(OUT), OUT)
        df.to_csv(OUT / "ablations.tsv", sep="\t", index=False)
        print(f"{len(df)} runs -> {OUT / 'ablations.tsv'}")
    elif args.command == "paired":
        body = paired(pd.read_csv(OUT / "ablations.tsv", sep="\t"), args.name, args.methods)
        if args.into:
            markdown.replace(args.into, f"ablation-{args.name}", body)
        print(body)
    elif args.command == "table":
        print(table(pd.read_csv(OUT / "ablations.tsv", sep="\t"), args.names, args.methods, OUT))
    elif args.command == "configs":
        CONFIGS.mkdir(exist_ok=True)
        for name in ABLATIONS:
            (CONFIGS / f"{name}.yaml").write_text(config_text(name))
        print(f"{len(ABLATIONS)} configurations -> {CONFIGS}")
    else:
        for name, (what, overrides) in ABLATIONS.items():
            print(f"{name:18s} {what}  {overrides}")


if __name__ == "__main__":
    sys.exit(main())
