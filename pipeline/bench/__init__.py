"""The project's benchmarks, one module per question, each a command:

    python -m pipeline.bench            the teacher cache against online distillation
    python -m pipeline.bench.loader     the training loader, from memory and from disk
    python -m pipeline.bench.store      reading the image store
    python -m pipeline.bench.encodings  the cache's compact encodings: bytes and what they lose
    python -m pipeline.bench.scale      the whole graph on generated data at growing N
    python -m pipeline.bench.report     the report's intervals at 50,000 test images x 1,000 classes

No benchmark imports another; they share harness.py (timing, metrics, the machine's figure,
memory), fixtures.py (the data sets and teachers they make), folders.py (generated image
folders; `python -m pipeline.bench.folders` writes one in ImageNet's layout and shape) and
runs.py (students' runs).
"""
