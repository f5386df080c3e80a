# The C atomics of the compiled allocator (issue 15), declared once for every hot module
# whose .pxd cimports them (``from allocator._compiled.atomics cimport ...``).  Not a
# module: setup.py stages this file beside the compiled modules and Cython copies the C
# below into each module that cimports from it.  Interpreted code never reads it.
#
# GCC/Clang builtins.  On x86-64 every one of them but the fetch-and-add is a plain mov
# (TSO gives acquire loads and release stores for free); what they buy there is that the
# C compiler may neither tear, merge, cache in a register nor reorder the access.  On a
# weakly ordered CPU they would emit the fences (implementation.check_architecture still
# refuses such machines: the interpreted mode has no fences).  docs/allocator.md "Memory
# ordering" lists every shared word and which of these it uses.

cdef extern from *:
    """
    static inline int zl_load_relaxed_int(int *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline int zl_load_acquire_int(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void zl_store_relaxed_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline void zl_store_release_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void zl_store_relaxed_ll(long long *p, long long v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline int zl_fetch_add_int(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
    static inline void zl_compiler_barrier(void) { __asm__ __volatile__("" ::: "memory"); }
    """
    int zl_load_relaxed_int(int *p) noexcept nogil
    int zl_load_acquire_int(int *p) noexcept nogil
    void zl_store_relaxed_int(int *p, int v) noexcept nogil
    void zl_store_release_int(int *p, int v) noexcept nogil
    void zl_store_relaxed_ll(long long *p, long long v) noexcept nogil
    int zl_fetch_add_int(int *p, int v) noexcept nogil
    void zl_compiler_barrier() noexcept nogil
