"""Cortical areas: LSTM networks trained with truncated BPTT."""
