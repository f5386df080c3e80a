# Cython declarations augmenting allocator/lock.py (pure-Python mode): LockOps becomes a
# C class whose lock list, owner words and row are C fields, so the plain lock pair is two
# C calls into the semaphore and two C release stores (allocator/atomics.pxd), and the
# instrumented pairs close over typed views.  Interpreted, this file is not read.  The
# context classes deriving from it (context.py) keep their other attributes in __dict__;
# an attribute annotated in LockOps's body must be declared here (Cython makes each a C
# field of the class).

cimport cython

from allocator._compiled.atomics cimport zl_load_acquire_int, zl_store_release_int

cdef bint ATOMIC

cdef class LockOps:
    cdef public list _mp, _held_since, _held_point
    cdef public int[:] lock_owner
    cdef public long long[:] lockprof
    cdef public int row1
    cdef public object sched_point, lock_hooks

    cpdef void lock(self, int i, int point) except *
    cpdef void unlock(self, int i) except *
    cpdef bint lock_within(self, int i, int point, double timeout) except *
    cpdef int lock_holder(self, int i) except? -2
    @cython.locals(i=int)
    cpdef list release_held(self)

# The instrumented pairs: the views and lists their closures capture are typed here; the
# closures' own arguments and locals by @cython.locals in lock.py (a .pxd cannot reach
# a nested function).
@cython.locals(owner=int[:], row1=int, mps=list, acq=list, spn=list, rel=list)
cdef tuple _hooked_pair(LockOps this, bint sched, bint spin, bint hooks)
@cython.locals(owner=int[:], row1=int, lp=cython.longlong[:], mask=int, mps=list, spn=list, bases=list,
               held_since=list, held_base=list)
cdef tuple _profiled_pair(LockOps this, bint sched, bint spin, bint hooks)
