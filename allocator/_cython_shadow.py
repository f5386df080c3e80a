"""What the hot modules need of ``cython`` when Cython is not installed (an interpreted
install built without it): ``compiled``, which is False in interpreted code, and
``locals`` with the type names it is given (allocator/lock.py types its closures' locals
that way), which do nothing.  With Cython installed its own shadow module is used;
compiled, ``cython.*`` is Cython's."""

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

compiled = False
int = int  # the C type names, as the interpreter sees them
longlong = int
Py_ssize_t = int


def locals(**_types: Any) -> Callable[[F], F]:
    """``@cython.locals(...)``: C types for the compiler; interpreted, the function as is."""
    return lambda f: f
