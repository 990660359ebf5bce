"""GMP extraction: the feature cache, k-means, the label files and the cluster report."""
