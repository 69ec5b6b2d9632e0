"""Fitting engines: the one Lloyd core, the row-block engines (local, Dask) and the k-means estimator."""
