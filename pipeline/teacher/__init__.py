"""The teacher pass: the teacher run over every stored image and view, its outputs written to the cache."""
