"""Analyses of recorded activity (DESIGN §7): correlations, population correlation."""
