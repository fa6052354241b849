"""ladder: the code the pipeline stages share, in folders that follow the pipeline.

Here, the core every stage goes through: params (params.yaml read and checked), paths, stage (the entry of every
stage's command), launch (training stages under accelerate), io (outputs replaced together), errors, batching,
lazy. Then data/ (fetch and clean), training/ (reward, SFT, DPO, merge), judge/ (the classifier), evaluation/
(inference and the ladder), export/ (quantize and GGUF) and tools/ (the `ladder` command).

Stage scripts live in ``stages/`` and never import each other; what two of them (or a stage and its tests) need
lives here. Nothing in this package imports torch or transformers at module level.
"""
