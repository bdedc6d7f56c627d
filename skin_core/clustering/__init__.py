"""DeepCluster's pseudo-labels: PCA whitening, faiss k-means, NMI and purity, and cluster-uniform sampling."""

from .kmeans import KMeansResult, cluster_nmi, fill_empty_clusters, kmeans, l2_normalize, pca_whiten
from .quality import cluster_purity
from .sampler import UniformClusterSampler

__all__ = [
    "KMeansResult",
    "UniformClusterSampler",
    "cluster_nmi",
    "cluster_purity",
    "fill_empty_clusters",
    "kmeans",
    "l2_normalize",
    "pca_whiten",
]
