"""The work itself, free of Luigi: sources, image store, views, teacher pass, training, metrics, report."""
