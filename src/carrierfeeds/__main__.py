"""`python -m carrierfeeds` runs the command line, like the `carrierfeeds` entry point."""

from carrierfeeds.cli import main

main()
