"""Ops' answers from the ledger and the feed folder: census arrival SLAs and the morning board."""
