"""DeepCluster's pseudo-labels: PCA whitening, faiss k-means, NMI, and cluster-uniform sampling."""

from .kmeans import KMeansResult, cluster_nmi, fill_empty_clusters, kmeans, l2_normalize, pca_whiten
from .sampler import UniformClusterSampler

__all__ = [
    "KMeansResult",
    "UniformClusterSampler",
    "cluster_nmi",
    "fill_empty_clusters",
    "kmeans",
    "l2_normalize",
    "pca_whiten",
]
