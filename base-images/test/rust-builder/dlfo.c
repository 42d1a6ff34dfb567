/* _dl_find_object for musl: libgcc_eh (built for glibc >= 2.35) asks it for
   the unwind tables of the object containing pc; answered through
   dl_iterate_phdr, which musl provides (also in static binaries). */
#define _GNU_SOURCE
#include <link.h>
#include <stddef.h>
#include <stdint.h>
struct dl_find_object {
    unsigned long long dlfo_flags;
    void *dlfo_map_start;
    void *dlfo_map_end;
    void *dlfo_link_map;
    void *dlfo_eh_frame;
    unsigned long long reserved[7];
};
struct query { uintptr_t pc; struct dl_find_object *out; int found; };
static int visit(struct dl_phdr_info *info, size_t size, void *data) {
    struct query *q = data;
    (void)size;
    uintptr_t lo = UINTPTR_MAX, hi = 0, eh = 0;
    int hit = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + p->p_vaddr;
        if (p->p_type == PT_LOAD) {
            if (start < lo) lo = start;
            if (start + p->p_memsz > hi) hi = start + p->p_memsz;
            if (q->pc >= start && q->pc < start + p->p_memsz) hit = 1;
        } else if (p->p_type == PT_GNU_EH_FRAME) {
            eh = start;
        }
    }
    if (!hit) return 0;
    q->out->dlfo_flags = 0;
    q->out->dlfo_map_start = (void *)lo;
    q->out->dlfo_map_end = (void *)hi;
    q->out->dlfo_link_map = NULL;
    q->out->dlfo_eh_frame = (void *)eh;
    q->found = 1;
    return 1;
}
int _dl_find_object(void *pc, struct dl_find_object *out) {
    struct query q = { (uintptr_t)pc, out, 0 };
    dl_iterate_phdr(visit, &q);
    return q.found ? 0 : -1;
}
