"""Training: one loop (loop.py), two stages as recipes (recipe.py), checkpoints (checkpoint.py)."""
