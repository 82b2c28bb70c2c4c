"""The command line: the only reader of argv and the environment.

``options`` (the flags as data, exit codes) and ``build`` (credentials, Settings) serve every
command; ``main`` parses and dispatches to ``run``, ``status`` (``state``), ``list-failed``,
``simulate`` and ``demo``, each imported only when it runs.
"""
