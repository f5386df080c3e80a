# Cython declarations augmenting allocator/fastpath.py (pure-Python mode): the types that
# make the compiled module's arena accesses C loads and stores and its calls C calls.
# Interpreted, this file is not read.  Keep it in step with fastpath.py: a method or
# attribute added there is a Python object here until declared.

cimport cython

from allocator._compiled.atomics cimport (zl_compiler_barrier, zl_fetch_add_int, zl_load_acquire_int,
                                          zl_load_relaxed_int, zl_store_release_int)

cdef int BUCKET_MAX, EXT_CLUSTER, EXT_NONE, EXT_PACKET, KEG_CLUSTER, KEG_MBUF, M_EXT, M_PKTHDR
cdef int MT_DATA, NREF_STRIPES, PANIC_BAD_DTOR, UMA_ZFLAG_FULL, ZONE_CLUSTER, ZONE_MBUF, ZONE_PACKET
cdef int M_NOWAIT, M_WAITOK, REF_LOCK0, P_REF_FREE, P_REF_COPY, LOCK_BUCKET

@cython.final
cdef class FastPath:
    cdef public object cpu
    cdef object sched_hook
    # Per-CPU rows and bucket counts are strided views (one cache line per element:
    # layout.py padded()); the other arrays are contiguous, declared so: no stride
    # load and multiply per access (measured: 21.5 -> 18.7 ns per zone pair, P1c).
    cdef int[:] allocbucket, freebucket, cnt
    cdef int[::1] entries, slots
    cdef long long[:] allocs, frees, ops
    cdef int[::1] ukflags, m_type, m_flags, m_next, m_len, m_ext, m_exttype, cl_ref
    cdef int[:] drainreq, drainmask, drained
    cdef Py_ssize_t row, rows, crow
    cdef public bint ref_atomic, ref_unlocked, exhaustion_drain, sched, direct, history, ref_slow

    cpdef void configure(self, bint sched, bint direct, bint history=*)
    @cython.locals(ci=Py_ssize_t, b=int, n=int, item=int, fb=int)
    cpdef int zalloc(self, int z, int flags=*, int udata=*) except? -2
    @cython.locals(ci=Py_ssize_t, b=int, n=int, k=int, full=int, ab=int)
    cpdef void zfree(self, int z, int item, int udata=*) except *
    @cython.locals(row=Py_ssize_t, req=int)
    cpdef void serve(self) except *
    cpdef int mb_ctor_mbuf(self, int m, int udata, int flags) except -1
    cpdef int mb_ctor_clust(self, int c, int m, int flags) except -1
    cpdef int mb_ctor_pack(self, int m, int udata, int flags) except -1
    @cython.locals(c=int, full=int)
    cpdef void mb_dtor_pack(self, int m, int udata) except *
    @cython.locals(m=int)
    cpdef int m_getcl(self, int how=*, int type_=*, int flags=*) except? -2
    @cython.locals(nxt=int, c=int, ref=int)
    cpdef void m_freem(self, int m) except *
    cdef void _zfree(self, int z, int item) except *
    @cython.locals(c=int, ref=int, old=int, last=bint)
    cpdef void mb_free_ext(self, int m) except *
    @cython.locals(udata=int, n=int, c=int)
    cpdef int m_copym(self, int m, int how=*) except? -2
    @cython.locals(old=int, lk=int)
    cpdef int ref_add(self, int c, int delta, int point) except? -1
    @cython.locals(old=int, lk=int)
    cdef int _ref_slow(self, int c, int delta, int point) except? -1

@cython.locals(i=long)
cpdef void pair_loop(FastPath fast, int z, long n) except *
@cython.locals(base=Py_ssize_t, item=int, c=int, i=long)
cpdef int floor_loop(int[:] cnt, int[:] slots, Py_ssize_t b, long n) except? -1
