"""Analyses of recorded activity: correlations, population correlation."""
