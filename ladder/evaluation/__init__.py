"""The ladder: the chat models it compares and how they generate, the controls, the Elo fit, the
validity checks, the figures of each stage and the headlines DVC compares."""
