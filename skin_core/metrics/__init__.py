"""Evaluation metrics: ``classification`` (the paper's figures), ``knn`` (k-NN scores of features) and
``compare`` (paired model comparison over seeds).

Import from the submodule: a training worker needs the classification report,
not scikit-learn's neighbours or the bootstrap.
"""
