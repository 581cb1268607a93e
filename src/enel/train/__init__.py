"""Training: recipes, the Trainer subclass, and the freezing rules of each stage."""
