"""Tasks: what is predicted, one module per task type. ``base`` holds the interface (see
:class:`~hftransfer.tasks.base.Task`) and what classification tasks share; ``text``, ``token``,
``image`` and ``audio`` build on it; ``multi`` is a set of tasks trained together. The registry
finds them by name."""
