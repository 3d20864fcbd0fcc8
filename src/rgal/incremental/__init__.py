"""Non-exemplar class-incremental learning: old classes replayed from inverted models.

Submodules: `protocol` (class split, per-task real data, metrics), `inversion` (ABD's
generator inversion, optionally with RGAL's relation loss), `learners` (the methods),
`runner` (the task loop and outputs), `config` and `command` (`rgal incremental`).
Kept import-light so that the CLI starts without loading torch.
"""
