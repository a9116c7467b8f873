"""`python -m pipeline.bench`: the benchmark of the teacher cache against online distillation."""
from pipeline.bench.cache_vs_online import main

main()
