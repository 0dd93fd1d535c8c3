"""`python -m carrierfeeds` runs the command line, like the `carrierfeeds` entry point."""

from carrierfeeds.cli import main

if __name__ == "__main__":
    main()
