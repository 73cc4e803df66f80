"""Replogle et al. 2022 (K562 genome-wide Perturb-seq): preprocessing and hold-out folds.

As in the released research code: keep the cells whose targeted gene (``obs["gene"]``)
is a member of one of Table S3's perturbation clusters, and the genes (columns) whose
symbol (``var["gene_name"]``) is a member of one of its expression programs; raw
counts, no normalisation (paper: 116,641 cells x 1,187 genes). ``non-targeting``
control cells are kept as well (optionally a seeded subset), because the "effect"
fold measures distances to them; :func:`folds.make_fold` drops them again by default.

The modules, in the order the workflow uses them:

* :mod:`.table_s3`: Table S3's perturbation clusters and expression programs, and the
  cluster a fold names;
* :mod:`.h5ad`: the raw h5ad read without loading it (obs column by column, ``X`` in row
  blocks) and the cheap checks of the inputs (rule ``check_replogle_inputs``);
* :mod:`.preprocessing`: the selected cells x genes written to an h5ad (rule
  ``preprocess_replogle``);
* :mod:`.folds`: the held-out perturbations of a fold (a Table S3 cluster or the
  perturbations farthest from the controls) and its training dataset (rule
  ``replogle_fold``).
"""

CONTROL = "non-targeting"
CONTROL_CLUSTER = "control"
MAX_NAMES = 20  # names listed in a warning
