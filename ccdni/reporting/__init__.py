"""Figures and tables drawn from run directories (read through ``RunDirectory``)."""
