"""Reconciliation: compare what the carrier holds with what we sent, and close the loop."""
