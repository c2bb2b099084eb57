/* edgebundle: give back the pages of Nuitka's bytecode blob once they have been read.
 *
 * Nuitka keeps the marshalled bytecode of every module it does not compile (the standard library,
 * NumPy, Pillow) in one section, ".bytecode", of the constants blob that it links into the
 * executable's read-only data. At start-up its loader walks every entry of that section, and the
 * kernel maps the 64 kB around each page it touches (fault-around): all of it, 6 MB for a typical
 * runner, ends up resident whether its modules are imported or not. Those pages are clean pages of a
 * read-only file mapping, so MADV_DONTNEED only unmaps them: a later read maps them again from the
 * page cache. The link wraps PyMarshal_ReadObjectFromString (-Wl,--wrap, see nuitka.py), through
 * which Nuitka's loader unmarshals each module it imports; after each one that comes from the section,
 * the whole section is unmapped again, so at most one module's bytecode is resident at any time.
 *
 * Anything unexpected (no blob, no section, a section outside a read-only segment of the program)
 * leaves the pages alone: the program then behaves as without this file. */

#define _GNU_SOURCE
#include <Python.h>
#include <link.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern unsigned char const *constant_bin; /* Nuitka's blob, set by its first loadConstantsBlob() */

PyObject *__real_PyMarshal_ReadObjectFromString(const char *data, Py_ssize_t len);

static int state; /* 0: not looked for yet, 1: found, -1: leave alone */
static uintptr_t section_start, section_end; /* whole pages inside the section */
static uintptr_t data_start, data_end;       /* the section itself */

struct segment_search {
    uintptr_t address;  /* in: an address of the program */
    uintptr_t lo, hi;   /* out: the read-only segment holding it, or lo == hi == 0 */
};

/* The PT_LOAD segment of the program (not of a shared library) that holds ``address``, if it is never
 * writable: not PF_W, and no part of it RELRO (which the dynamic linker writes before protecting). */
static int find_segment(struct dl_phdr_info *info, size_t size, void *data) {
    struct segment_search *search = data;
    (void)size;
    if (info->dlpi_name != NULL && info->dlpi_name[0] != '\0') {
        return 0; /* a shared library; the program is the entry with an empty name */
    }
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        ElfW(Phdr) const *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (ph->p_type == PT_LOAD && lo <= search->address && search->address < hi && !(ph->p_flags & PF_W)) {
            search->lo = lo;
            search->hi = hi;
        }
    }
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        ElfW(Phdr) const *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (ph->p_type == PT_GNU_RELRO && lo < search->hi && search->lo < hi) {
            search->lo = search->hi = 0;
        }
    }
    return 1;
}

static void find_section(void) {
    uintptr_t w = (uintptr_t)constant_bin;
    if (w == 0) {
        return; /* not loaded yet: look again at the next call */
    }
    state = -1;
    struct segment_search segment = {w, 0, 0};
    dl_iterate_phdr(find_segment, &segment);
    if (segment.hi == 0) {
        return; /* not in a read-only segment of the program (an LTO build puts it in .data) */
    }
    /* The blob: entries of a NUL-terminated name, a 32-bit size and that many bytes. Nuitka ends
     * its walk at the name it looks for; ".bytecode" is there whenever a module is bytecode. Every
     * read stays inside the segment, whatever the bytes say. */
    while (w < segment.hi) {
        size_t room = segment.hi - w;
        size_t name_length = strnlen((char const *)w, room);
        uint32_t size;
        if (name_length + 1 + sizeof(size) > room) {
            return;
        }
        int match = strcmp((char const *)w, ".bytecode") == 0;
        w += name_length + 1;
        memcpy(&size, (void const *)w, sizeof(size));
        w += sizeof(size);
        if (size > segment.hi - w) {
            return;
        }
        if (match) {
            long page = sysconf(_SC_PAGESIZE);
            if (page <= 0) {
                return;
            }
            uintptr_t mask = (uintptr_t)page - 1;
            data_start = w;
            data_end = w + size;
            section_start = (data_start + mask) & ~mask;
            section_end = data_end & ~mask;
            if (section_end > section_start) {
                state = 1;
            }
            return;
        }
        w += size;
    }
}

PyObject *__wrap_PyMarshal_ReadObjectFromString(const char *data, Py_ssize_t len) {
    PyObject *result = __real_PyMarshal_ReadObjectFromString(data, len);
    if (state == 0) {
        find_section();
    }
    if (state == 1 && (uintptr_t)data >= data_start && (uintptr_t)data < data_end) {
        madvise((void *)section_start, section_end - section_start, MADV_DONTNEED);
    }
    return result;
}
