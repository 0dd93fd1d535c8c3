"""What a run hands the carrier besides an 834: flat files from declarative layouts, and the printable PDF."""
