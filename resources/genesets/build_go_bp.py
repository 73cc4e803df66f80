#!/usr/bin/env python3
"""Build an offline GO Biological Process gene-set library (GMT) for human gene symbols.

Sources (Debian bookworm Bioconductor annotation packages):
  * r-bioc-go.db 3.16.0-1        -> GO.db/extdata/GO.sqlite
        GO term names/ontology, GO release 2022-07-01 (go-basic.obo)
  * r-bioc-org.hs.eg.db 3.16.0-1 -> org.Hs.eg.db/extdata/org.Hs.eg.sqlite
        human gene -> GO annotations from NCBI Entrez Gene (2022-Sep12)

Method:
  * Annotations come from table ``go_bp_all`` of org.Hs.eg.sqlite, i.e. gene -> GO BP
    term *including all ancestor terms* (propagated along is_a/part_of), so every set
    contains the genes annotated to the term or to any of its descendants.
  * All evidence codes are used EXCEPT 'ND' (No biological Data available), which only
    marks "no known BP" annotations to the root term. IEA (electronic) annotations ARE kept.
  * Entrez gene IDs are mapped to symbols via ``gene_info``; each set is the set of
    unique symbols (two Entrez IDs sharing one symbol count once).
  * Only terms whose ontology is 'BP' in GO.sqlite are kept, and only those with
    min_size <= n_genes <= max_size (default 10..500).
  * GMT line: "<term name> (<GO:id>)" TAB "http://amigo.geneontology.org/amigo/term/<GO:id>"
    TAB sorted symbols...; lines sorted by GO id.
  * Output is gzip with mtime=0 and no embedded file name, so rebuilds are byte-identical.

Usage:
  python3 resources/genesets/build_go_bp.py \\
      --go-sqlite /path/GO.db/extdata/GO.sqlite \\
      --orghs-sqlite /path/org.Hs.eg.db/extdata/org.Hs.eg.sqlite \\
      --out resources/genesets/go_bp_2022-07-01.gmt.gz [--min-size 10 --max-size 500]

  Or, on Debian bookworm (needs network + apt sources), let the script fetch the packages:
  python3 resources/genesets/build_go_bp.py --from-debian /tmp/debs \\
      --out resources/genesets/go_bp_2022-07-01.gmt.gz
  This runs `apt-get download r-bioc-go.db r-bioc-org.hs.eg.db` in DIR and unpacks each
  .deb with `dpkg -x <deb> DIR/x` (no root needed); sqlite paths not given explicitly are
  then taken from DIR/x/usr/lib/R/site-library/... . Check the downloaded versions are
  3.16.0-1 (bookworm) if you want to reproduce the shipped file exactly.

Only the Python standard library is used.
"""
import argparse
import collections
import glob
import gzip
import io
import os
import sqlite3
import subprocess
import sys

AMIGO = "http://amigo.geneontology.org/amigo/term/"
DROP_EVIDENCE = ("ND",)
GO_REL = "usr/lib/R/site-library/GO.db/extdata/GO.sqlite"
ORG_REL = "usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite"


def fetch_debian(d):
    """apt-get download the two packages into d and dpkg -x them into d/x."""
    os.makedirs(d, exist_ok=True)
    subprocess.run(["apt-get", "download", "r-bioc-go.db", "r-bioc-org.hs.eg.db"],
                   cwd=d, check=True)
    x = os.path.join(d, "x")
    os.makedirs(x, exist_ok=True)
    for pkg in ("r-bioc-go.db", "r-bioc-org.hs.eg.db"):
        debs = sorted(glob.glob(os.path.join(d, pkg + "_*.deb")))
        if not debs:
            sys.exit("no .deb found for %s in %s" % (pkg, d))
        print("unpacking", debs[-1], file=sys.stderr)
        subprocess.run(["dpkg", "-x", debs[-1], x], check=True)
    return os.path.join(x, GO_REL), os.path.join(x, ORG_REL)


def metadata(path):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return dict(con.execute("SELECT name, value FROM metadata"))
    finally:
        con.close()


def build(go_sqlite, orghs_sqlite, min_size, max_size):
    go = sqlite3.connect("file:%s?mode=ro" % go_sqlite, uri=True)
    terms = dict(go.execute("SELECT go_id, term FROM go_term WHERE ontology = 'BP'"))
    go.close()

    org = sqlite3.connect("file:%s?mode=ro" % orghs_sqlite, uri=True)
    q = ("SELECT a.go_id, g.symbol FROM go_bp_all a JOIN gene_info g ON a._id = g._id "
         "WHERE a.evidence NOT IN (%s)" % ",".join("?" * len(DROP_EVIDENCE)))
    sets = collections.defaultdict(set)
    for go_id, sym in org.execute(q, DROP_EVIDENCE):
        sets[go_id].add(sym)
    org.close()

    missing = sorted(set(sets) - set(terms))
    if missing:
        print("warning: %d GO ids in go_bp_all not BP terms in GO.sqlite; skipped (e.g. %s)"
              % (len(missing), missing[:3]), file=sys.stderr)
    out = []
    for go_id in sorted(sets):
        if go_id not in terms:
            continue
        genes = sets[go_id]
        if min_size <= len(genes) <= max_size:
            name = " ".join(terms[go_id].split())  # no tabs/newlines in GMT names
            out.append((go_id, "%s (%s)" % (name, go_id), sorted(genes)))
    return out, len(sets)


def write_gmt(records, path):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw:
        # filename="" and mtime=0 keep the gzip header free of run-specific data
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            with io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as fh:
                for go_id, name, genes in records:
                    fh.write("\t".join([name, AMIGO + go_id] + genes) + "\n")
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--go-sqlite", help="GO.db extdata/GO.sqlite")
    ap.add_argument("--orghs-sqlite", help="org.Hs.eg.db extdata/org.Hs.eg.sqlite")
    ap.add_argument("--from-debian", metavar="DIR",
                    help="apt-get download + dpkg -x the Debian packages into DIR "
                         "and use their sqlite files (only for paths not given)")
    ap.add_argument("--out", required=True, help="output .gmt.gz")
    ap.add_argument("--min-size", type=int, default=10)
    ap.add_argument("--max-size", type=int, default=500)
    a = ap.parse_args(argv)

    if not (a.go_sqlite and a.orghs_sqlite):
        if not a.from_debian:
            ap.error("give --go-sqlite and --orghs-sqlite, or --from-debian DIR")
        g, o = fetch_debian(a.from_debian)
        a.go_sqlite = a.go_sqlite or g
        a.orghs_sqlite = a.orghs_sqlite or o
    for p in (a.go_sqlite, a.orghs_sqlite):
        if not os.path.isfile(p):
            sys.exit("not found: %s" % p)

    gm, om = metadata(a.go_sqlite), metadata(a.orghs_sqlite)
    records, n_terms_annot = build(a.go_sqlite, a.orghs_sqlite, a.min_size, a.max_size)
    write_gmt(records, a.out)

    genes = set(s for _, _, gs in records for s in gs)
    print("GO release (GO.db GOSOURCEDATE): %s  [%s]" % (gm.get("GOSOURCEDATE"), gm.get("GOSOURCEURL")))
    print("GO release (org.Hs.eg.db GOSOURCEDATE): %s" % om.get("GOSOURCEDATE"))
    print("Entrez Gene (org.Hs.eg.db EGSOURCEDATE / GOEGSOURCEDATE): %s / %s"
          % (om.get("EGSOURCEDATE"), om.get("GOEGSOURCEDATE")))
    print("evidence codes dropped: %s" % ",".join(DROP_EVIDENCE))
    print("BP terms with annotations: %d" % n_terms_annot)
    print("gene sets written (%d <= size <= %d): %d" % (a.min_size, a.max_size, len(records)))
    print("unique gene symbols in written sets: %d" % len(genes))
    print("output: %s (%d bytes)" % (a.out, os.path.getsize(a.out)))


if __name__ == "__main__":
    main()
