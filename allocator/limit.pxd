# Cython declarations augmenting allocator/limit.py (pure-Python mode): the wait-channel
# words as typed memoryviews, so every access is the C atomic limit.py's docstring names
# (allocator/atomics.pxd).  LimitOps itself stays a Python class (it derives from the
# context classes, which are).  Interpreted, this file is not read.

cimport cython

from allocator._compiled.atomics cimport (zl_load_acquire_int, zl_store_relaxed_int, zl_store_relaxed_ll,
                                          zl_store_release_int)

cdef int WCHAN_NONE

@cython.final
cdef class WaitChannel:
    cdef int[:] wchan, woken, wkeg, wzone
    cdef long long[:] wsince

    cpdef void release(self)
    cpdef void sleep_on(self, Py_ssize_t row, int chan, int k, int z, long long since) except *
    cpdef void leave(self, Py_ssize_t row) except *
    cpdef void wake(self, Py_ssize_t row) except *
    cpdef bint is_woken(self, Py_ssize_t row) except *
