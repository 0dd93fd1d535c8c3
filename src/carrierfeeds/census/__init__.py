"""Census intake: sources, readers, normalisation and the synthetic generator."""
