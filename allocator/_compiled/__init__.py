"""The compiled twins of the allocator's hot modules (filled by the build; see
allocator/implementation.py).  Each ``allocator._compiled.X`` is ``allocator/X.py``
compiled by Cython; nothing here is written by hand."""
