/*
 * sandbox.c - the sandbox launcher: see sandbox.h for what the child gets.
 *
 * The parent (sandbox_spawn) runs in a possibly threaded process. It clones the child with
 * every new namespace at once, writes the child's uid/gid maps and cgroup membership, then
 * lets it go and waits for a report on a close-on-exec pipe: nothing (EOF) means execve
 * succeeded, a struct report means a step failed. sandbox_fork is the same launcher with a
 * fork-like clone (no stack of its own): its child takes the same steps but, instead of
 * execve, closes the report pipe (EOF: success) and returns to the caller's program.
 *
 * The child runs on its own stack in a copy of the parent's memory, where another thread may
 * have held a lock (malloc's, stdio's) at the moment of the clone. So from clone to execve it
 * only makes system calls and uses its stack: no malloc, no stdio, no locale; strings are
 * built by hand. Its steps, in order, and why the order:
 *
 *   1. wait for the parent: until the uid map is written the child cannot create files on
 *      its own tmpfs (the kernel refuses owners the namespace cannot map), and until it is in
 *      its cgroups it must not allocate on the function's account;
 *   2. make every mount private (nothing propagates back to the host), open every mount
 *      source with O_PATH: still as host root, which may traverse root-only directories like
 *      /root (the Python of pyenv lives there), which uid 0 of the new namespace, mapped to an
 *      unprivileged host uid, may not;
 *   3. mount the root tmpfs, switch to uid/gid 0 of the namespace, build the tree in it:
 *      /tmp and /dev first, so that binds listed under /tmp land on top of its tmpfs; mount
 *      points are created component by component with O_NOFOLLOW, so a symlink in a bound
 *      directory can never redirect a mount outside the new root;
 *   4. /proc is mounted before the old root goes: the kernel allows a new procfs in a user
 *      namespace only while a fully visible one exists in the mount namespace;
 *   5. pivot_root into the tmpfs, detach the old root, set the hostname, raise loopback,
 *      start a new session;
 *   6. arrange fds, limits; drop capabilities; no_new_privs; seccomp last, since the filter
 *      forbids some of the steps above; execve.
 *
 * The child is a copy of one thread of a possibly threaded process, and libc does not know:
 * its set*id wrappers would signal the other threads to change their credentials too, and
 * wait forever for answers. The child makes those system calls directly.
 */
#define _GNU_SOURCE
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef __NR_close_range
#define __NR_close_range 436
#endif
#ifndef __NR_mount_setattr
#define __NR_mount_setattr 442
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV 0x00000004
#define MOUNT_ATTR_NOEXEC 0x00000008
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif
#ifndef SECCOMP_RET_KILL_PROCESS
#define SECCOMP_RET_KILL_PROCESS SECCOMP_RET_KILL
#endif

#if defined(__x86_64__)
#define SECCOMP_ARCH AUDIT_ARCH_X86_64
#define X32_SYSCALL_BIT 0x40000000u
#elif defined(__aarch64__)
#define SECCOMP_ARCH AUDIT_ARCH_AARCH64
#endif

/* The child's stack: generous, because sanitizers enlarge frames; untouched pages cost nothing. */
#define CHILD_STACK_SIZE (1024 * 1024)
/* Instructions in the seccomp program; sandbox_spawn checks that the program fits. */
#define FILTER_MAX 320

/* The same layout as struct mount_attr of <linux/mount.h>, which older libcs lack. */
struct attr_request {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};

/* What a failed child writes to the report pipe (less than PIPE_BUF: written atomically). */
struct report {
    int err;
    char what[SANDBOX_ERROR_SIZE];
};

struct filter {
    struct sock_filter insn[FILTER_MAX];
    unsigned short len;
    int overflow;
};

/* Everything the child needs, on the parent's stack (the child reads its own copy). */
struct child_ctx {
    const struct sandbox_spec *spec;
    const struct filter *filter;
    int go_read;    /* one byte from the parent: maps and cgroups are in place */
    int go_write;   /* the parent's end, closed in the child */
    int err_read;   /* the parent's end, closed in the child */
    int err_write;  /* close-on-exec: EOF for the parent once execve succeeds */
    int fork_mode;  /* sandbox_fork: the child returns to the caller's program, no execve */
    unsigned long long *stamps; /* sandbox_child.stamps (the child's copy, in the child) */
};

/* Device nodes bound from the host into the sandbox's /dev. */
static const char *const device_names[] = {"null", "zero", "full", "random", "urandom"};
#define N_DEVICES (sizeof device_names / sizeof device_names[0])

/* Parts of the new /proc that are made read-only: kernel knobs a namespace root may write. */
static const char *const proc_readonly[] = {"proc/sys", "proc/sysrq-trigger", "proc/irq",
                                            "proc/bus"};
#define N_PROC_READONLY (sizeof proc_readonly / sizeof proc_readonly[0])

/* --- helpers safe between clone and execve (system calls and the stack only) ------------ */

/* Record CLOCK_MONOTONIC in `stamps[which]` (a vDSO call: safe in the child). */
static void stamp(unsigned long long *stamps, int which)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    stamps[which] =
        (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec;
}

/* For functions of the child that call noreturn functions: AddressSanitizer's bookkeeping for
 * such calls assumes a stack it allocated, and the child runs on our own mmap'd one. */
#if defined(__SANITIZE_ADDRESS__)
#define CHILD_SIDE __attribute__((no_sanitize_address))
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHILD_SIDE __attribute__((no_sanitize_address))
#endif
#endif
#ifndef CHILD_SIDE
#define CHILD_SIDE
#endif

/* Append `src` to the NUL-terminated `dst` of `size` bytes, truncating. */
static void str_append(char *dst, size_t size, const char *src)
{
    size_t used = strlen(dst);
    while (*src && used + 1 < size)
        dst[used++] = *src++;
    dst[used] = '\0';
}

/* Append the decimal digits of `value` to `dst` (as str_append). */
static void str_append_uint(char *dst, size_t size, unsigned long long value)
{
    char digits[24];
    size_t i = sizeof digits;
    digits[--i] = '\0';
    do {
        digits[--i] = (char)('0' + value % 10);
        value /= 10;
    } while (value && i > 0);
    str_append(dst, size, digits + i);
}

/* "/proc/self/fd/N": a path to what `fd` refers to, usable where only paths are accepted. */
static void fd_path(char *dst, size_t size, int fd)
{
    dst[0] = '\0';
    str_append(dst, size, "/proc/self/fd/");
    str_append_uint(dst, size, (unsigned long long)fd);
}

/* A sandbox path relative to the root being built: "/usr/lib" -> "usr/lib". */
static const char *relative(const char *path)
{
    while (*path == '/')
        path++;
    return path;
}

/* Report `err` at step `what` (+ `detail`) to the parent and exit: the child's only way out
 * before execve. */
static void CHILD_SIDE __attribute__((noreturn))
child_fail(const struct child_ctx *c, int err, const char *what, const char *detail)
{
    struct report r;
    memset(&r, 0, sizeof r);
    r.err = err > 0 ? err : EIO;
    str_append(r.what, sizeof r.what, what);
    if (detail) {
        str_append(r.what, sizeof r.what, " ");
        str_append(r.what, sizeof r.what, detail);
    }
    ssize_t n = write(c->err_write, &r, sizeof r);
    (void)n; /* nothing else to tell the parent: it sees EOF and the exit status */
    _exit(127);
}

/* Set every signal back to its default action: the caller's handlers (Python's among them)
 * must never run in the child. Signals stay blocked until just before execve. */
static void reset_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)sigaction(sig, &sa, NULL); /* libc's internal signals answer EINVAL */
    }
}

/*
 * Create the mount point `path` (relative to the cwd, the root tmpfs) and the directories
 * above it: a directory, or an empty file when `as_file`. Each component is opened with
 * O_NOFOLLOW from its parent's descriptor, so a symlink anywhere on the way (including one
 * inside a directory already bound) is refused rather than followed out of the new root.
 * Existing components are reused, which lets a mount go on top of a directory that an
 * earlier bind provides. Returns 0 or -errno.
 */
static int make_mount_point(const char *path, int as_file)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return -EINVAL;
    memcpy(buf, path, len + 1);

    int dirfd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return -errno;
    char *name = buf;
    for (;;) {
        while (*name == '/')
            name++;
        char *slash = strchr(name, '/');
        if (slash)
            *slash = '\0';
        int last = !slash || slash[1 + strspn(slash + 1, "/")] == '\0';
        int next;
        if (last && as_file) {
            /* O_RDONLY|O_CREAT: creates on the tmpfs, yet opens an existing file even on a
             * read-only bind. */
            next = openat(dirfd, name, O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
        } else {
            if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST) {
                int err = errno;
                close(dirfd);
                return -err;
            }
            next = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        int err = errno;
        close(dirfd);
        if (next < 0)
            return -err;
        dirfd = next;
        if (last)
            break;
        name = slash + 1;
    }
    close(dirfd);
    return 0;
}

/* Add `attrs` (MOUNT_ATTR_*) to the mount at `target` and every mount below it. Before Linux
 * 5.12 (no mount_setattr) only the top mount is remounted, keeping the flags it has: in a user
 * namespace the kernel refuses to clear flags it locked. Returns 0 or -errno. */
static int restrict_mount(const char *target, uint64_t attrs)
{
    struct attr_request req;
    memset(&req, 0, sizeof req);
    req.attr_set = attrs;
    if (syscall(__NR_mount_setattr, AT_FDCWD, target, AT_RECURSIVE | AT_SYMLINK_NOFOLLOW, &req,
                sizeof req) == 0)
        return 0;
    if (errno != ENOSYS)
        return -errno;

    struct statvfs st;
    if (statvfs(target, &st) < 0)
        return -errno;
    unsigned long flags = MS_BIND | MS_REMOUNT;
    if ((attrs & MOUNT_ATTR_RDONLY) || (st.f_flag & ST_RDONLY))
        flags |= MS_RDONLY;
    if ((attrs & MOUNT_ATTR_NOSUID) || (st.f_flag & ST_NOSUID))
        flags |= MS_NOSUID;
    if ((attrs & MOUNT_ATTR_NODEV) || (st.f_flag & ST_NODEV))
        flags |= MS_NODEV;
    if ((attrs & MOUNT_ATTR_NOEXEC) || (st.f_flag & ST_NOEXEC))
        flags |= MS_NOEXEC;
    if (st.f_flag & ST_NOATIME)
        flags |= MS_NOATIME;
    if (st.f_flag & ST_NODIRATIME)
        flags |= MS_NODIRATIME;
    if (st.f_flag & ST_RELATIME)
        flags |= MS_RELATIME;
    return mount(NULL, target, NULL, flags, NULL) < 0 ? -errno : 0;
}

/* Bind what `source_fd` (O_PATH) refers to at `target`, with its submounts, then restrict it
 * with `attrs`. Returns 0 or -errno. */
static int bind_fd(int source_fd, const char *target, uint64_t attrs)
{
    char source[64];
    fd_path(source, sizeof source, source_fd);
    if (mount(source, target, NULL, MS_BIND | MS_REC, NULL) < 0)
        return -errno;
    return restrict_mount(target, attrs);
}

/* Mount a tmpfs at `target` with `flags` and "mode=`mode`[,size=`size`]". Returns 0 or -errno. */
static int mount_tmpfs(const char *target, unsigned long flags, const char *mode,
                       unsigned long long size)
{
    /* uid=0,gid=0 are read in our user namespace: the tmpfs belongs to the sandbox's root
     * even when mounted before the switch to it (as the root tmpfs is). */
    char options[80] = "uid=0,gid=0,mode=";
    str_append(options, sizeof options, mode);
    if (size) {
        str_append(options, sizeof options, ",size=");
        str_append_uint(options, sizeof options, size);
    }
    return mount("tmpfs", target, "tmpfs", flags, options) < 0 ? -errno : 0;
}

/* The symlink `link->path` -> `link->target`, with the directories above it. */
static int make_symlink(const struct sandbox_symlink *link)
{
    char parent[PATH_MAX];
    const char *path = relative(link->path);
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof parent)
        return -EINVAL;
    memcpy(parent, path, len + 1);
    char *slash = strrchr(parent, '/');
    if (slash) {
        *slash = '\0';
        int rc = make_mount_point(parent, 0);
        if (rc < 0)
            return rc;
    }
    return symlink(link->target, path) < 0 ? -errno : 0;
}

/* Bring up the loopback interface of the new network namespace, as a host would have it. */
static int loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    int rc = 0;
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        rc = -errno;
    } else {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            rc = -errno;
    }
    close(s);
    return rc;
}

/* /dev: a tmpfs with the harmless host devices bound on empty files (a user namespace may not
 * make device nodes), the usual symlinks and a private /dev/shm; read-only afterwards. */
static void CHILD_SIDE build_dev(const struct child_ctx *c, const int *device_fds)
{
    int rc = make_mount_point("dev", 0);
    if (rc == 0)
        rc = mount_tmpfs("dev", MS_NOSUID | MS_NOEXEC, "0755", 64 * 1024);
    if (rc < 0)
        child_fail(c, -rc, "mount tmpfs on", "/dev");
    for (size_t i = 0; i < N_DEVICES; i++) {
        if (device_fds[i] < 0)
            continue;
        char target[32] = "dev/";
        str_append(target, sizeof target, device_names[i]);
        rc = make_mount_point(target, 1);
        if (rc == 0)
            rc = bind_fd(device_fds[i], target, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
        if (rc < 0)
            child_fail(c, -rc, "bind device", device_names[i]);
        close(device_fds[i]);
    }
    static const struct sandbox_symlink links[] = {
        {"dev/fd", "/proc/self/fd"},
        {"dev/stdin", "/proc/self/fd/0"},
        {"dev/stdout", "/proc/self/fd/1"},
        {"dev/stderr", "/proc/self/fd/2"},
    };
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        rc = make_symlink(&links[i]);
        if (rc < 0)
            child_fail(c, -rc, "symlink", links[i].path);
    }
    rc = make_mount_point("dev/shm", 0);
    if (rc == 0)
        rc = mount_tmpfs("dev/shm", MS_NOSUID | MS_NODEV, "1777", c->spec->tmp_size);
    if (rc < 0)
        child_fail(c, -rc, "mount tmpfs on", "/dev/shm");
    if (mount(NULL, "dev", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC,
              NULL) < 0)
        child_fail(c, errno, "make read-only", "/dev");
}

/* /proc of the new PID namespace, with the kernel's knobs read-only. */
static void CHILD_SIDE build_proc(const struct child_ctx *c)
{
    int rc = make_mount_point("proc", 0);
    if (rc < 0)
        child_fail(c, -rc, "make mount point", "/proc");
    if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        child_fail(c, errno, "mount", "/proc");
    for (size_t i = 0; i < N_PROC_READONLY; i++) {
        const char *path = proc_readonly[i];
        if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) {
            if (errno == ENOENT)
                continue; /* not in this kernel's configuration */
            child_fail(c, errno, "bind", path);
        }
        rc = restrict_mount(path, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                      MOUNT_ATTR_NOEXEC);
        if (rc < 0)
            child_fail(c, -rc, "make read-only", path);
    }
}

/* Close descriptors `first` to `last` (inclusive). Returns 0 or -errno. */
static int close_span(unsigned int first, unsigned int last)
{
    if (first > last)
        return 0;
    if (syscall(__NR_close_range, first, last, 0u) == 0)
        return 0;
    if (errno != ENOSYS)
        return -errno;
    /* Before Linux 5.9: one by one, up to the descriptor limit. */
    struct rlimit rl;
    rlim_t limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 65536;
    for (rlim_t fd = first; fd <= last && fd < limit && fd < (rlim_t)INT_MAX; fd++)
        (void)close((int)fd);
    return 0;
}

/* sandbox_fork's child goes on in its caller's program rather than executing a new one, so
 * close-on-exec closes nothing: it closes every descriptor above 2 that it was not given, and
 * keeps the report pipe, which it closes last. */
static void CHILD_SIDE close_unkept(struct child_ctx *c)
{
    const struct sandbox_spec *s = c->spec;
    int keep[SANDBOX_MAX_FDS + 1];
    size_t n = 0;
    for (size_t i = 0; i < s->n_fds; i++) {
        if (s->fds[i].child_fd > 2)
            keep[n++] = s->fds[i].child_fd;
    }
    keep[n++] = c->err_write;
    for (size_t i = 1; i < n; i++) { /* a handful: insertion sort */
        int value = keep[i];
        size_t j = i;
        for (; j > 0 && keep[j - 1] > value; j--)
            keep[j] = keep[j - 1];
        keep[j] = value;
    }
    unsigned int next = 3;
    for (size_t i = 0; i < n; i++) {
        unsigned int fd = (unsigned int)keep[i];
        if (fd >= next) {
            int rc = close_span(next, fd - 1);
            if (rc < 0)
                child_fail(c, -rc, "close_range", NULL);
            next = fd + 1;
        }
    }
    int rc = close_span(next, ~0u);
    if (rc < 0)
        child_fail(c, -rc, "close_range", NULL);
}

/* Put each fds[i].parent_fd at fds[i].child_fd, /dev/null on 0-2 where nothing is given, and
 * mark every other descriptor close-on-exec (the report pipe closes at execve that way). */
static void CHILD_SIDE arrange_fds(struct child_ctx *c)
{
    const struct sandbox_spec *s = c->spec;
    int top = 2; /* the highest target */
    for (size_t i = 0; i < s->n_fds; i++) {
        if (s->fds[i].child_fd > top)
            top = s->fds[i].child_fd;
    }
    /* Everything we still need moves above every target first, so no dup2 below can
     * overwrite a source, the report pipe or /dev/null. */
    int floor = top + 1;
    if (c->err_write < floor) {
        int moved = fcntl(c->err_write, F_DUPFD_CLOEXEC, floor);
        if (moved < 0)
            child_fail(c, errno, "move the report pipe", NULL);
        close(c->err_write);
        c->err_write = moved;
    }
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        child_fail(c, errno, "open", "/dev/null");
    if (devnull < floor) {
        int moved = fcntl(devnull, F_DUPFD_CLOEXEC, floor);
        if (moved < 0)
            child_fail(c, errno, "move", "/dev/null");
        close(devnull);
        devnull = moved;
    }
    int copies[SANDBOX_MAX_FDS];
    for (size_t i = 0; i < s->n_fds; i++) {
        copies[i] = fcntl(s->fds[i].parent_fd, F_DUPFD_CLOEXEC, floor);
        if (copies[i] < 0)
            child_fail(c, errno, "duplicate a passed descriptor", NULL);
    }
    for (size_t i = 0; i < s->n_fds; i++) {
        /* dup3 without O_CLOEXEC: the target survives execve. */
        if (dup3(copies[i], s->fds[i].child_fd, 0) < 0)
            child_fail(c, errno, "place a passed descriptor", NULL);
        close(copies[i]);
    }
    for (int fd = 0; fd <= 2; fd++) {
        int given = 0;
        for (size_t i = 0; i < s->n_fds; i++)
            given |= s->fds[i].child_fd == fd;
        if (!given && dup3(devnull, fd, 0) < 0)
            child_fail(c, errno, "put /dev/null on a standard descriptor", NULL);
    }
    close(devnull);

    if (syscall(__NR_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) < 0) {
        if (errno != ENOSYS && errno != EINVAL)
            child_fail(c, errno, "close_range", NULL);
        /* Before Linux 5.11: one by one, up to the descriptor limit. */
        struct rlimit rl;
        rlim_t limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 65536;
        for (rlim_t fd = 3; fd < limit && fd < (rlim_t)INT_MAX; fd++)
            (void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    }
    for (size_t i = 0; i < s->n_fds; i++) {
        if (s->fds[i].child_fd > 2 && fcntl(s->fds[i].child_fd, F_SETFD, 0) < 0)
            child_fail(c, errno, "keep a passed descriptor", NULL);
    }
    if (c->fork_mode)
        close_unkept(c);
}

/* Give up every capability for good: none now (effective, permitted, inheritable, ambient),
 * none from execve (bounding set empty, SECBIT_NOROOT: uid 0 gains nothing), all locked. */
static int drop_capabilities(void)
{
    if (prctl(PR_SET_SECUREBITS,
              SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                  SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                  SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
              0, 0, 0) < 0)
        return -errno;
    for (unsigned long cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL)
                break; /* past the last capability this kernel knows */
            return -errno;
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return -errno;
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    return syscall(SYS_capset, &header, data) < 0 ? -errno : 0;
}

/* The child's steps 1-6 up to the seccomp filter (see the top of this file); on a failure it
 * reports and exits. Shared by both launchers: sandbox_spawn's child then executes the program,
 * sandbox_fork's returns to its caller. */
static void CHILD_SIDE build_sandbox(struct child_ctx *c)
{
    const struct sandbox_spec *s = c->spec;
    int source_fds[SANDBOX_MAX_MOUNTS];
    int device_fds[N_DEVICES];
    int rc;

    close(c->go_write);
    close(c->err_read);
    /* A forked child goes on in its caller's program, whose handlers it keeps (the caller is
     * single-threaded and ready for it); an exec'd one must never run them. */
    if (!c->fork_mode)
        reset_signal_handlers();
    char go;
    ssize_t n;
    do {
        n = read(c->go_read, &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1)
        _exit(127); /* the parent gave up on us and reaps us */
    close(c->go_read);
    stamp(c->stamps, SANDBOX_STAMP_GO);

    /* Step 2: private mounts; sources opened while we are still host root. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        child_fail(c, errno, "make mounts private", NULL);
    for (size_t i = 0; i < s->n_mounts; i++) {
        source_fds[i] = -1;
        if (s->mounts[i].source) {
            source_fds[i] = open(s->mounts[i].source, O_PATH | O_CLOEXEC);
            if (source_fds[i] < 0)
                child_fail(c, errno, "open", s->mounts[i].source);
        }
    }
    for (size_t i = 0; i < N_DEVICES; i++) {
        char path[32] = "/dev/";
        str_append(path, sizeof path, device_names[i]);
        device_fds[i] = open(path, O_PATH | O_CLOEXEC);
        if (device_fds[i] < 0 && errno != ENOENT)
            child_fail(c, errno, "open", path);
    }

    /* Step 3: the root tmpfs (it holds mount points and symlinks only), then our own ids. */
    rc = mount_tmpfs(s->root, MS_NOSUID | MS_NODEV, "0755", 1024 * 1024);
    if (rc < 0)
        child_fail(c, -rc, "mount the root tmpfs on", s->root);
    if (chdir(s->root) < 0)
        child_fail(c, errno, "chdir", s->root);
    /* Raw system calls: libc's wrappers apply credentials to every thread the parent had,
     * signalling them and waiting for answers that, in this single-threaded copy, never
     * come. */
    if (syscall(SYS_setgroups, 0, NULL) < 0)
        child_fail(c, errno, "setgroups", NULL);
    if (syscall(SYS_setresgid, 0, 0, 0) < 0)
        child_fail(c, errno, "setresgid", NULL);
    if (syscall(SYS_setresuid, 0, 0, 0) < 0)
        child_fail(c, errno, "setresuid", NULL);
    /* After the uid change, which clears the parent-death signal. */
    if ((s->flags & SANDBOX_DIE_WITH_PARENT) && prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        child_fail(c, errno, "PR_SET_PDEATHSIG", NULL);

    /* /tmp and /dev first, so that mounts listed under them go on top, not beneath. */
    rc = make_mount_point("tmp", 0);
    if (rc == 0)
        rc = mount_tmpfs("tmp", MS_NOSUID | MS_NODEV, "1777", s->tmp_size);
    if (rc < 0)
        child_fail(c, -rc, "mount tmpfs on", "/tmp");
    build_dev(c, device_fds);

    for (size_t i = 0; i < s->n_mounts; i++) {
        const struct sandbox_mount *m = &s->mounts[i];
        const char *target = relative(m->target);
        if (source_fds[i] < 0) {
            /* Writable until the tree is complete: a later mount may need a mount point
             * inside it. */
            rc = make_mount_point(target, 0);
            if (rc == 0)
                rc = mount_tmpfs(target, MS_NOSUID | MS_NODEV | MS_NOEXEC, "0755", 4096);
            if (rc < 0)
                child_fail(c, -rc, "mount an empty directory on", m->target);
            continue;
        }
        struct stat st;
        if (fstat(source_fds[i], &st) < 0)
            child_fail(c, errno, "stat", m->source);
        rc = make_mount_point(target, !S_ISDIR(st.st_mode));
        if (rc < 0)
            child_fail(c, -rc, "make mount point", m->target);
        uint64_t attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if (!(m->flags & SANDBOX_MOUNT_WRITABLE))
            attrs |= MOUNT_ATTR_RDONLY;
        rc = bind_fd(source_fds[i], target, attrs);
        if (rc < 0)
            child_fail(c, -rc, "bind", m->source);
        close(source_fds[i]);
    }
    for (size_t i = 0; i < s->n_symlinks; i++) {
        rc = make_symlink(&s->symlinks[i]);
        if (rc < 0)
            child_fail(c, -rc, "symlink", s->symlinks[i].path);
    }
    for (size_t i = 0; i < s->n_mounts; i++) {
        if (!s->mounts[i].source &&
            mount(NULL, relative(s->mounts[i].target), NULL,
                  MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            child_fail(c, errno, "make read-only", s->mounts[i].target);
    }

    /* Step 4: /proc while the host's is still in this mount namespace. */
    build_proc(c);

    /* Step 5: the tmpfs becomes / (read-only), the host's root goes. */
    if (mount(NULL, ".", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        child_fail(c, errno, "make the root read-only", NULL);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        child_fail(c, errno, "pivot_root", NULL);
    if (umount2(".", MNT_DETACH) < 0)
        child_fail(c, errno, "detach the old root", NULL);
    if (chdir("/") < 0)
        child_fail(c, errno, "chdir", "/");
    const char *hostname = s->hostname ? s->hostname : "sandbox";
    if (sethostname(hostname, strlen(hostname)) < 0)
        child_fail(c, errno, "sethostname", hostname);
    if (s->netns_fd < 0) {
        rc = loopback_up();
        if (rc < 0)
            child_fail(c, -rc, "bring up loopback", NULL);
    }

    /* A session of its own: the caller's terminal and process-group signals (a Ctrl-C sent
     * to the worker's group) do not reach the sandbox. */
    if (setsid() < 0)
        child_fail(c, errno, "setsid", NULL);

    stamp(c->stamps, SANDBOX_STAMP_ROOT);

    /* Step 6: descriptors, limits, privileges, filter, program. */
    arrange_fds(c);
    if (s->cwd && chdir(s->cwd) < 0)
        child_fail(c, errno, "chdir", s->cwd);
    for (size_t i = 0; i < s->n_rlimits; i++) {
        struct rlimit rl;
        rl.rlim_cur = s->rlimits[i].soft == ~0ull ? RLIM_INFINITY : (rlim_t)s->rlimits[i].soft;
        rl.rlim_max = s->rlimits[i].hard == ~0ull ? RLIM_INFINITY : (rlim_t)s->rlimits[i].hard;
        if (setrlimit((__rlimit_resource_t)s->rlimits[i].resource, &rl) < 0)
            child_fail(c, errno, "setrlimit", NULL);
    }
    rc = drop_capabilities();
    if (rc < 0)
        child_fail(c, -rc, "drop capabilities", NULL);
    /* The id change made the process non-dumpable, which gives its /proc files to the host's
     * root; execve would undo that, and a forked child does what execve would. */
    if (c->fork_mode && prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
        child_fail(c, errno, "PR_SET_DUMPABLE", NULL);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        child_fail(c, errno, "PR_SET_NO_NEW_PRIVS", NULL);
    struct sock_fprog program = {c->filter->len, (struct sock_filter *)c->filter->insn};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) < 0)
        child_fail(c, errno, "install the seccomp filter", NULL);
    stamp(c->stamps, SANDBOX_STAMP_SEALED);
}

/* sandbox_spawn's child: build the sandbox, then execve. Never returns. */
static int CHILD_SIDE child_main(void *arg)
{
    struct child_ctx *c = arg;
    build_sandbox(c);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(c->spec->path, c->spec->argv, c->spec->envp);
    child_fail(c, errno, "execute", c->spec->path);
}

/* --- the seccomp program ----------------------------------------------------------------- */

/* Append one instruction; too many sets `overflow`, which sandbox_spawn turns into an error. */
static void emit(struct filter *f, unsigned short code, unsigned char jt, unsigned char jf,
                 uint32_t k)
{
    if (f->len >= FILTER_MAX) {
        f->overflow = 1;
        return;
    }
    f->insn[f->len++] = (struct sock_filter){code, jt, jf, k};
}

#define LOAD(f, off) emit(f, BPF_LD | BPF_W | BPF_ABS, 0, 0, (uint32_t)(off))
#define JEQ(f, k, jt, jf) emit(f, BPF_JMP | BPF_JEQ | BPF_K, jt, jf, (uint32_t)(k))
#define RET(f, v) emit(f, BPF_RET | BPF_K, 0, 0, (uint32_t)(v))
#define DENY(e) (SECCOMP_RET_ERRNO | ((uint32_t)(e) & SECCOMP_RET_DATA))

/* The low 32 bits of argument `i`: what the kernel reads of clone's flags, socket's domain and
 * ioctl's request, which are all 32-bit values to it. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LOW(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#else
#define ARG_LOW(i) (offsetof(struct seccomp_data, args) + 8 * (i) + 4)
#endif

#ifdef SECCOMP_ARCH
/* Answered with EPERM. Each #ifdef: not every architecture has every call. */
static const int denied_syscalls[] = {
    /* file systems and the mount table */
    __NR_mount, __NR_umount2, __NR_pivot_root, __NR_chroot,
#ifdef __NR_umount
    __NR_umount,
#endif
#ifdef __NR_open_tree
    __NR_open_tree, __NR_move_mount, __NR_fsopen, __NR_fsconfig, __NR_fsmount, __NR_fspick,
#endif
    __NR_mount_setattr,
    467, /* open_tree_attr (Linux 6.15), not yet in every libc's headers */
    /* other processes' memory */
    __NR_ptrace, __NR_process_vm_readv, __NR_process_vm_writev, __NR_kcmp,
#ifdef __NR_pidfd_getfd
    __NR_pidfd_getfd,
#endif
    /* the kernel itself */
    __NR_kexec_load,
#ifdef __NR_kexec_file_load
    __NR_kexec_file_load,
#endif
    __NR_init_module, __NR_finit_module, __NR_delete_module, __NR_bpf, __NR_perf_event_open,
    __NR_userfaultfd, __NR_keyctl, __NR_add_key, __NR_request_key, __NR_reboot, __NR_swapon,
    __NR_swapoff, __NR_acct, __NR_quotactl, __NR_syslog, __NR_open_by_handle_at,
    __NR_settimeofday, __NR_clock_settime,
#ifdef __NR_quotactl_fd
    __NR_quotactl_fd,
#endif
#ifdef __NR_lookup_dcookie
    __NR_lookup_dcookie,
#endif
#ifdef __NR_iopl
    __NR_iopl, __NR_ioperm,
#endif
#ifdef __NR_uselib
    __NR_uselib,
#endif
#ifdef __NR__sysctl
    __NR__sysctl,
#endif
#ifdef __NR_create_module
    __NR_create_module,
#endif
#ifdef __NR_nfsservctl
    __NR_nfsservctl,
#endif
    /* io_uring: a large kernel surface; the channel's sandbox side does not need it */
    __NR_io_uring_setup, __NR_io_uring_enter, __NR_io_uring_register,
    /* leaving or making namespaces */
    __NR_unshare, __NR_setns,
};

/* Socket families a function may open: local, IP (its namespace has only loopback unless
 * the worker gave it one) and netlink (to read its own addresses). */
static const int allowed_families[] = {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK};
#define N_FAMILIES (sizeof allowed_families / sizeof allowed_families[0])

#define NAMESPACE_FLAGS                                                                       \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |            \
     CLONE_NEWPID | CLONE_NEWNET)
#endif

/* Build the program described in sandbox.h into `f`. Returns 0, -ENOTSUP without a filter
 * for this architecture, or -E2BIG if the program outgrew FILTER_MAX. */
static int build_filter(struct filter *f)
{
    memset(f, 0, sizeof *f);
#ifndef SECCOMP_ARCH
    return -ENOTSUP;
#else
    LOAD(f, offsetof(struct seccomp_data, arch));
    JEQ(f, SECCOMP_ARCH, 1, 0);
    RET(f, SECCOMP_RET_KILL_PROCESS);
    LOAD(f, offsetof(struct seccomp_data, nr));
#ifdef X32_SYSCALL_BIT
    /* The x32 ABI shares the x86-64 audit arch: its numbers carry this bit. */
    emit(f, BPF_JMP | BPF_JGE | BPF_K, 0, 1, X32_SYSCALL_BIT);
    RET(f, DENY(ENOSYS));
#endif
    for (size_t i = 0; i < sizeof denied_syscalls / sizeof denied_syscalls[0]; i++) {
        JEQ(f, denied_syscalls[i], 0, 1);
        RET(f, DENY(EPERM));
    }
    /* clone3 passes its flags in memory, out of the filter's reach: ENOSYS makes libc fall
     * back to clone, whose flags it can check. */
    JEQ(f, __NR_clone3, 0, 1);
    RET(f, DENY(ENOSYS));
    JEQ(f, __NR_clone, 0, 4);
    LOAD(f, ARG_LOW(0));
    emit(f, BPF_JMP | BPF_JSET | BPF_K, 0, 1, NAMESPACE_FLAGS);
    RET(f, DENY(EPERM));
    RET(f, SECCOMP_RET_ALLOW);
    const int socket_calls[] = {__NR_socket, __NR_socketpair};
    for (size_t s = 0; s < 2; s++) {
        /* block: load, one test per family, deny, allow */
        JEQ(f, socket_calls[s], 0, (unsigned char)(N_FAMILIES + 3));
        LOAD(f, ARG_LOW(0));
        for (size_t i = 0; i < N_FAMILIES; i++)
            JEQ(f, allowed_families[i], (unsigned char)(N_FAMILIES - i), 0);
        RET(f, DENY(EAFNOSUPPORT));
        RET(f, SECCOMP_RET_ALLOW);
    }
    /* TIOCSTI and TIOCLINUX push input into a terminal the caller may have passed. */
    JEQ(f, __NR_ioctl, 0, 5);
    LOAD(f, ARG_LOW(1));
    JEQ(f, TIOCSTI, 2, 0);
    JEQ(f, TIOCLINUX, 1, 0);
    RET(f, SECCOMP_RET_ALLOW);
    RET(f, DENY(EPERM));
    RET(f, SECCOMP_RET_ALLOW);
    return f->overflow ? -E2BIG : 0;
#endif
}

/* --- the parent -------------------------------------------------------------------------- */

/* Set child->error to `what` (+ " " + `detail`) and return `rc`. */
static int parent_error(struct sandbox_child *child, int rc, const char *what, const char *detail)
{
    snprintf(child->error, sizeof child->error, "%s%s%s", what, detail ? " " : "",
             detail ? detail : "");
    return rc;
}

/* Whether `path` is absolute, shorter than PATH_MAX and free of "." and ".." components. */
static int valid_path(const char *path)
{
    if (!path || path[0] != '/' || strlen(path) >= PATH_MAX)
        return 0;
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        p += len;
    }
    return 1;
}

/* Check what the child would otherwise fail on, where the error is cheap to explain. */
static int validate(const struct sandbox_spec *s, struct sandbox_child *child)
{
    if (!valid_path(s->path) || !s->argv || !s->argv[0] || !s->envp)
        return parent_error(child, -EINVAL, "path, argv or envp", NULL);
    if (!valid_path(s->root))
        return parent_error(child, -EINVAL, "root must be an absolute path", NULL);
    if (s->cwd && !valid_path(s->cwd))
        return parent_error(child, -EINVAL, "cwd must be an absolute path", NULL);
    if (s->hostname && strlen(s->hostname) > 64)
        return parent_error(child, -EINVAL, "hostname longer than 64 bytes", NULL);
    if (s->n_mounts > SANDBOX_MAX_MOUNTS || s->n_symlinks > SANDBOX_MAX_SYMLINKS ||
        s->n_fds > SANDBOX_MAX_FDS || s->n_rlimits > SANDBOX_MAX_RLIMITS ||
        s->n_cgroup_fds > SANDBOX_MAX_CGROUPS)
        return parent_error(child, -E2BIG, "too many mounts, symlinks, fds, rlimits or cgroups",
                            NULL);
    if ((s->n_mounts && !s->mounts) || (s->n_symlinks && !s->symlinks) || (s->n_fds && !s->fds) ||
        (s->n_rlimits && !s->rlimits) || (s->n_cgroup_fds && !s->cgroup_fds))
        return parent_error(child, -EINVAL, "an array is NULL", NULL);
    if (s->tmp_size == 0)
        return parent_error(child, -EINVAL, "tmp_size must be positive", NULL);
    for (size_t i = 0; i < s->n_mounts; i++) {
        const struct sandbox_mount *m = &s->mounts[i];
        if (!valid_path(m->target) || !*relative(m->target))
            return parent_error(child, -EINVAL, "bad mount target", m->target);
        if (m->source && m->source[0] != '/')
            return parent_error(child, -EINVAL, "mount source must be absolute", m->source);
    }
    for (size_t i = 0; i < s->n_symlinks; i++) {
        const struct sandbox_symlink *l = &s->symlinks[i];
        if (!valid_path(l->path) || !*relative(l->path) || !l->target || !*l->target)
            return parent_error(child, -EINVAL, "bad symlink", l->path);
    }
    for (size_t i = 0; i < s->n_fds; i++) {
        if (fcntl(s->fds[i].parent_fd, F_GETFD) < 0)
            return parent_error(child, -EBADF, "a descriptor to pass is not open", NULL);
        if (s->fds[i].child_fd < 0 || s->fds[i].child_fd > 65535)
            return parent_error(child, -EINVAL, "child descriptor out of range", NULL);
        for (size_t j = 0; j < i; j++) {
            if (s->fds[j].child_fd == s->fds[i].child_fd)
                return parent_error(child, -EINVAL, "two descriptors for one child fd", NULL);
        }
    }
    for (size_t i = 0; i < s->n_cgroup_fds; i++) {
        if (fcntl(s->cgroup_fds[i], F_GETFD) < 0)
            return parent_error(child, -EBADF, "a cgroup descriptor is not open", NULL);
    }
    if (s->netns_fd >= 0 && fcntl(s->netns_fd, F_GETFD) < 0)
        return parent_error(child, -EBADF, "netns_fd is not open", NULL);
    return 0;
}

/* Write `data` to the file at `path` in one write(2), as /proc's map files require. */
static int write_file(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = strlen(data);
    ssize_t n = write(fd, data, len);
    int rc = n < 0 ? -errno : ((size_t)n == len ? 0 : -EIO);
    close(fd);
    return rc;
}

/* Map the child's uid/gid 0 to the host ids and put it in its cgroups. */
static int prepare_child(const struct sandbox_spec *s, pid_t pid, struct sandbox_child *child)
{
    char path[64], line[64];
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
    snprintf(line, sizeof line, "0 %u 1\n", s->uid);
    int rc = write_file(path, line);
    if (rc < 0)
        return parent_error(child, rc, "write", path);
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    snprintf(line, sizeof line, "0 %u 1\n", s->gid);
    rc = write_file(path, line);
    if (rc < 0)
        return parent_error(child, rc, "write", path);
    snprintf(line, sizeof line, "%d\n", (int)pid);
    for (size_t i = 0; i < s->n_cgroup_fds; i++) {
        ssize_t n = write(s->cgroup_fds[i], line, strlen(line));
        if (n < 0)
            return parent_error(child, -errno, "join a cgroup", NULL);
    }
    return 0;
}

/* Reap the child `pid`, retrying on signals. */
static void reap(pid_t pid)
{
    while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
        ;
}

/* Clone the child from the calling thread, in `netns_fd`'s network namespace when given
 * (namespaces are per thread: this thread enters it for the clone and returns). With no
 * `stack_top` (sandbox_fork) the clone is fork-like: the child returns 0 from here on a copy
 * of this stack. */
static pid_t clone_child(struct child_ctx *c, void *stack_top, int *pidfd,
                         struct sandbox_child *child)
{
    int flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |
                CLONE_PIDFD | SIGCHLD;
    int own_netns = -1;
    if (c->spec->netns_fd >= 0) {
        own_netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (own_netns < 0)
            return parent_error(child, -errno, "open /proc/thread-self/ns/net", NULL);
        if (setns(c->spec->netns_fd, CLONE_NEWNET) < 0) {
            int err = errno;
            close(own_netns);
            return parent_error(child, -err, "enter the network namespace", NULL);
        }
    } else {
        flags |= CLONE_NEWNET;
    }
    pid_t pid;
    if (stack_top) {
        pid = clone(child_main, stack_top, flags, c, pidfd);
    } else {
        /* The raw system call, as fork but with namespaces: the parent_tid argument (third
         * on every architecture) receives the pidfd. */
        pid = (pid_t)syscall(SYS_clone, (unsigned long)flags, NULL, pidfd, NULL, NULL);
        if (pid == 0)
            return 0; /* the child: own_netns is closed with the others it was not given */
    }
    int err = errno;
    if (own_netns >= 0) {
        /* Going back cannot fail for a process that could enter; if it did, this thread
         * would go on in the sandbox's network, where the caller would never look for it. */
        if (setns(own_netns, CLONE_NEWNET) < 0)
            abort();
        close(own_netns);
    }
    if (pid < 0)
        return parent_error(child, -err, "clone", NULL);
    return pid;
}

/* sandbox_spawn and sandbox_fork: one launcher, which in `fork_mode` returns in the child. */
static int launch(const struct sandbox_spec *spec, struct sandbox_child *child, int fork_mode)
{
    if (!spec || !child)
        return -EINVAL;
    memset(child, 0, sizeof *child);
    child->pid = -1;
    child->pidfd = -1;
    int rc = validate(spec, child);
    if (rc < 0)
        return rc;
    struct filter filter;
    rc = build_filter(&filter);
    if (rc < 0)
        return parent_error(child, rc, "build the seccomp filter for this architecture", NULL);

    int go[2], err[2];
    if (pipe2(go, O_CLOEXEC) < 0)
        return parent_error(child, -errno, "pipe", NULL);
    if (pipe2(err, O_CLOEXEC) < 0) {
        rc = -errno;
        close(go[0]);
        close(go[1]);
        return parent_error(child, rc, "pipe", NULL);
    }
    void *stack = NULL;
    if (!fork_mode) {
        stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
            rc = parent_error(child, -errno, "mmap the child's stack", NULL);
            goto out_pipes;
        }
    }
    struct child_ctx ctx = {
        .spec = spec,
        .filter = &filter,
        .go_read = go[0],
        .go_write = go[1],
        .err_read = err[0],
        .err_write = err[1],
        .fork_mode = fork_mode,
        .stamps = child->stamps,
    };

    /* No signal handler of ours may run in the child before it resets them all (sandbox_fork:
     * before its sandbox is complete). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pidfd = -1;
    stamp(child->stamps, SANDBOX_STAMP_CLONE);
    pid_t pid = clone_child(&ctx, stack ? (char *)stack + CHILD_STACK_SIZE : NULL, &pidfd, child);
    if (pid == 0) {
        stamp(child->stamps, SANDBOX_STAMP_CHILD);
        /* sandbox_fork's child: every step done (or it has exited), seccomp installed. The
         * report pipe's EOF tells the parent so. */
        build_sandbox(&ctx);
        close(ctx.err_write);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        child->pid = 0;
        child->pidfd = -1;
        return 0;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    /* The child has its own copy of the stack mapping. */
    if (stack)
        munmap(stack, CHILD_STACK_SIZE);
    close(go[0]);
    close(err[1]);
    go[0] = err[1] = -1;
    if (pid < 0) {
        rc = pid;
        goto out_pipes;
    }

    rc = prepare_child(spec, pid, child);
    if (rc < 0) {
        kill(pid, SIGKILL);
        close(go[1]);
        go[1] = -1;
        reap(pid);
        close(pidfd);
        goto out_pipes;
    }
    ssize_t n;
    do {
        n = write(go[1], "g", 1);
    } while (n < 0 && errno == EINTR);
    close(go[1]);
    go[1] = -1;

    struct report r;
    size_t got = 0;
    while (got < sizeof r) {
        n = read(err[0], (char *)&r + got, sizeof r - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got > 0) {
        /* The child failed before execve and has exited (or is exiting): reap it. */
        reap(pid);
        close(pidfd);
        if (got == sizeof r) {
            r.what[sizeof r.what - 1] = '\0';
            rc = parent_error(child, -r.err, r.what, NULL);
        } else {
            rc = parent_error(child, -EIO, "short report from the child", NULL);
        }
        goto out_pipes;
    }
    child->pid = pid;
    child->pidfd = pidfd;
    rc = 0;

out_pipes:
    for (int i = 0; i < 2; i++) {
        if (go[i] >= 0)
            close(go[i]);
        if (err[i] >= 0)
            close(err[i]);
    }
    return rc;
}

int sandbox_spawn(const struct sandbox_spec *spec, struct sandbox_child *child)
{
    return launch(spec, child, 0);
}

int sandbox_fork(const struct sandbox_spec *spec, struct sandbox_child *child)
{
    return launch(spec, child, 1);
}

int sandbox_become_subreaper(void)
{
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 ? -errno : 0;
}

int sandbox_features(void)
{
#ifdef SECCOMP_ARCH
    return SANDBOX_HAVE_SECCOMP;
#else
    return 0;
#endif
}
