"""Training-data synthesis: positive clips (generator backends), hard negatives, quality filter."""
