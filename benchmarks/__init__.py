"""The benchmark suite (``suite.py``) and its parts; each ``*.py`` with a ``main`` is also a script."""
