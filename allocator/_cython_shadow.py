"""What the hot modules need of ``cython`` when Cython is not installed (an interpreted
install built without it): only ``compiled``, which is False in interpreted code.  With
Cython installed its own shadow module is used; compiled, ``cython.*`` is Cython's."""

compiled = False
