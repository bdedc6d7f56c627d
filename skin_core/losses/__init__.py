"""The training criteria: ``multi_similarity`` (the teacher's MS loss) and ``attention_transfer`` (the student's).

Import from the submodule: a package that re-exported both would make the
student, and every worker that trains one, import pytorch-metric-learning and
SciPy for a loss it never uses.
"""
