"""One Click script per pipeline stage: `python -m stages.<name> --help`."""
