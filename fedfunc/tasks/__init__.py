"""Tasks: the API a scientist's task is written against (``api``), the platform's loops (``loop``), the
data reader (``data``), loading a task from its files (``loader``, ``folder``), signing (``signing``),
in-process simulation (``simulation``), the built-in tasks (``builtin``) and partitioning (``partition``).

Importing this package imports nothing else: the orchestrator's process may use ``partition`` without
pulling in torch, and never imports task code at all.
"""
