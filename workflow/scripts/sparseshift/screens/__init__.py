"""Screens: any perturbation AnnData (scPerturb / pertpy conventions) made into the dataset a
training job reads.

A *front* turns its input into the dataset contract of :mod:`sparseshift.data` (counts in ``X``,
``obs["perturbation"]``, ``obs["split"]``, ``uns["perturbations"]``); everything after it is
shared by the simulations, the Replogle folds and the users' screens. The modules:

* :mod:`.reader`: any h5ad read without loading it (obs column by column, a count matrix ``X``
  or a layer, dense or CSR, in contiguous row blocks);
* :mod:`.dataset`: the training dataset of labelled cells and held-out perturbations (the
  Replogle folds use it too);
* :mod:`.prepare`: a user's screen read, checked and reduced (controls, combinations, cells per
  perturbation, highly variable genes or a gene list, held-out perturbations);
* :mod:`.export`: a trained run's answers for the user (``latents.h5ad``, ``targets.tsv``).
"""
