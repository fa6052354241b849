"""ladder: shared code of the pipeline stages (params, I/O, source formats, models).

Stage scripts live in ``stages/`` and never import each other; what two of them (or a stage and its
tests) need lives here. Nothing in this package imports torch or transformers at module level.
"""
