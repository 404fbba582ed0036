"""Experiments reproducing results of the meta-learning papers with tinymeta."""
