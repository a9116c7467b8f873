"""The work itself, free of Luigi, grouped by the data's path: data/ (sources, image store),
teacher/ (views, the teacher pass), training/ (loader, losses, loop), evaluation/ (metrics,
report); beside them the configuration check, progress, locks, dask clusters and the benchmark."""
