"""The commands a person types (`ladder ...`): review, timings, recipes, pin, env, the params reference,
the machine's matmul peaks."""
