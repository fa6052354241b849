"""The data: reading each source as it is, parsing its format to the unified records, cleaning them, and
the starting models fetched beside it."""
