"""ANSI X12 834 005010X220A1: code lists, envelope, writer, conformance checks, acknowledgments."""
