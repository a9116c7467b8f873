"""The teacher pass: views drawn and rendered, the teacher run over them, its outputs written to the cache."""
