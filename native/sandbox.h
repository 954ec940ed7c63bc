/*
 * sandbox.h - start a process in a sandbox: namespaces, a built root, limits, seccomp.
 *
 * sandbox_spawn() clones a child into new user, PID, mount, IPC, UTS and (unless given one)
 * network namespaces and executes a program there. Between clone and execve only the child's
 * C code runs, using system calls and its own stack: the caller may be a threaded Python
 * process, where nothing else is safe after a fork.
 *
 * What the child sees, in order of construction:
 *
 *   /                    a small tmpfs mounted on `root` (a host directory, left untouched:
 *                        the tmpfs lives in the child's mount namespace only), read-only once
 *                        built; it holds only the mount points and symlinks listed below
 *   /tmp, /dev/shm       private tmpfs of `tmp_size` bytes each
 *   /dev                 tmpfs with null, zero, full, random, urandom bound from the host and
 *                        fd, stdin, stdout, stderr symlinks; read-only
 *   mounts[]             host paths bound at their targets, read-only (recursively) unless
 *                        SANDBOX_MOUNT_WRITABLE; a NULL source is an empty read-only directory
 *                        that hides whatever a previous mount put at its target (later
 *                        mounts may still go inside it)
 *   symlinks[]           made in the root tmpfs
 *   /proc                the new PID namespace's procfs; sys, sysrq-trigger, irq, bus read-only
 *
 * The child leads a new session (no controlling terminal; the caller's process-group signals
 * do not reach it). As pid 1 of its namespace, it ignores signals it has no handler for unless
 * they come from outside the namespace, where SIGKILL always works.
 *
 * Identity: uid and gid 0 inside map to `uid` and `gid` outside (one id each), so that a
 * process that escapes every namespace is an unprivileged user on the host, not root. The
 * child drops every capability (bounding set, ambient set, securebits NOROOT), sets
 * PR_SET_NO_NEW_PRIVS and installs a seccomp filter (sandbox_features() says whether this
 * architecture has one; without it sandbox_spawn refuses with -ENOTSUP).
 *
 * The seccomp filter answers EPERM to: mount and the new mount API, umount, pivot_root,
 * chroot, ptrace, process_vm_readv/writev, pidfd_getfd, kcmp, kexec, module loading, bpf,
 * perf_event_open, userfaultfd, keyctl/add_key/request_key, reboot, swapon/swapoff, unshare,
 * setns, acct, quotactl, syslog, open_by_handle_at, iopl/ioperm, io_uring, clock and time
 * setting, and clone with any namespace flag; ENOSYS to clone3 (whose flags it cannot read;
 * libc falls back to clone) and to the x32 ABI; EAFNOSUPPORT to sockets other than AF_UNIX,
 * AF_INET, AF_INET6 and AF_NETLINK (AF_VSOCK reaches the hypervisor, past any network
 * namespace); EPERM to the TIOCSTI and TIOCLINUX ioctls. Another architecture's system calls
 * kill the process.
 *
 * File descriptors: each fds[i].parent_fd is duplicated to fds[i].child_fd; fds 0-2 not so
 * given become /dev/null; every other descriptor is closed at execve.
 *
 * Cgroups: the child is written into every cgroup_fds[i] (open for writing on a cgroup.procs
 * file) before it runs anything, so all it and its descendants allocate is charged there.
 *
 * Every function returns 0 on success and -errno on failure; none sets errno.
 */
#ifndef FAASD_SANDBOX_H
#define FAASD_SANDBOX_H

#include <stddef.h>

/* sandbox_mount.flags */
#define SANDBOX_MOUNT_WRITABLE 1 /* bind read-write (still nosuid, nodev) */

/* sandbox_spec.flags */
#define SANDBOX_DIE_WITH_PARENT 1 /* SIGKILL the child when the calling *thread* exits */

/* sandbox_features() bits */
#define SANDBOX_HAVE_SECCOMP 1 /* a seccomp filter exists for this architecture */

/* Bounds checked by sandbox_spawn (-E2BIG past them). */
#define SANDBOX_MAX_MOUNTS 128
#define SANDBOX_MAX_SYMLINKS 64
#define SANDBOX_MAX_FDS 64
#define SANDBOX_MAX_RLIMITS 16
#define SANDBOX_MAX_CGROUPS 8
#define SANDBOX_ERROR_SIZE 256

/* A bind mount: `source` on the host (absolute; NULL for an empty directory) at `target` in
 * the sandbox (absolute, no "." or ".." components, no symlinks on the way). */
struct sandbox_mount {
    const char *source;
    const char *target;
    int flags;
};

/* A symlink at `path` in the sandbox that points to `target` (taken as is). */
struct sandbox_symlink {
    const char *path;
    const char *target;
};

/* Descriptor `parent_fd` of the caller becomes `child_fd` in the sandbox. */
struct sandbox_fd {
    int parent_fd;
    int child_fd;
};

/* setrlimit(resource, {soft, hard}) in the child; ~0ull is RLIM_INFINITY. */
struct sandbox_rlimit {
    int resource;
    unsigned long long soft;
    unsigned long long hard;
};

/* What to run and how. Every pointer is read during the call only. */
struct sandbox_spec {
    const char *path;  /* the program, absolute, as seen inside the sandbox */
    char *const *argv; /* NULL-terminated */
    char *const *envp; /* NULL-terminated */
    const char *root;  /* an existing, empty host directory to build the root on */
    const char *cwd;   /* inside the sandbox; NULL for "/" */
    const char *hostname;
    const struct sandbox_mount *mounts;
    size_t n_mounts;
    const struct sandbox_symlink *symlinks;
    size_t n_symlinks;
    const struct sandbox_fd *fds;
    size_t n_fds;
    const struct sandbox_rlimit *rlimits;
    size_t n_rlimits;
    const int *cgroup_fds;
    size_t n_cgroup_fds;
    unsigned long long tmp_size; /* bytes, for /tmp and for /dev/shm */
    unsigned int uid;            /* host uid that uid 0 inside maps to */
    unsigned int gid;            /* host gid that gid 0 inside maps to */
    int netns_fd;                /* a network namespace to join, or -1 for a new empty one */
    int flags;                   /* SANDBOX_* */
};

/* sandbox_child.stamps: CLOCK_MONOTONIC nanoseconds at the launcher's steps. The parent sets
 * CLONE; the child sets the others in its own copy, which only sandbox_fork's child (it goes
 * on in the same memory) gets to read: a cold start's breakdown. */
#define SANDBOX_STAMP_CLONE 0  /* the parent, just before the clone */
#define SANDBOX_STAMP_CHILD 1  /* the child, just after it */
#define SANDBOX_STAMP_GO 2     /* ids mapped, cgroups joined: the parent's go-ahead read */
#define SANDBOX_STAMP_ROOT 3   /* the root built and entered (mounts, /proc, pivot_root) */
#define SANDBOX_STAMP_SEALED 4 /* descriptors, rlimits, capabilities, seccomp: done */
#define SANDBOX_STAMPS 5

/* The started child. On failure `error` names the step that failed ("bind /usr/lib", ...). */
struct sandbox_child {
    int pid;
    int pidfd; /* owned by the caller: close it after waiting */
    char error[SANDBOX_ERROR_SIZE];
    unsigned long long stamps[SANDBOX_STAMPS];
};

/*
 * Start spec->path in a new sandbox. Returns once the child has executed the program (0) or
 * failed to (-errno, with child->error saying where; the child is reaped). On success the
 * caller owns child->pidfd and must reap child->pid (waitid P_PIDFD or waitpid).
 * Thread-safe; blocks the calling thread for the few milliseconds the child takes to build
 * its root.
 */
int sandbox_spawn(const struct sandbox_spec *spec, struct sandbox_child *child);

/*
 * As sandbox_spawn, but the child executes nothing: it returns from this call (0, with
 * child->pid == 0) in its finished sandbox, seccomp filter installed, and goes on running the
 * caller's program there (SOCK's zygote: a process that has loaded a runtime forks, and the
 * child walls itself in before it loads any code of the function). In the parent it returns
 * 0 with child->pid and child->pidfd once the sandbox is complete, or -errno as
 * sandbox_spawn does. spec->path, argv and envp are checked but not used.
 *
 * Differences in the child: it keeps the caller's signal handlers and signal mask (a
 * sandbox_spawn child resets them), and it closes every descriptor above 2 it was not given
 * (rather than marking them close-on-exec). The caller must be single-threaded: the child is
 * a copy of the calling thread only, and unlike fork(2) no atfork handler runs in it.
 */
int sandbox_fork(const struct sandbox_spec *spec, struct sandbox_child *child);

/* Make the caller adopt its descendants' orphans (PR_SET_CHILD_SUBREAPER): a process that
 * calls sandbox_fork from a child it forked, which then exits, still reaps the sandboxes. */
int sandbox_become_subreaper(void);

/* SANDBOX_HAVE_* bits of what this build supports. */
int sandbox_features(void);

#endif /* FAASD_SANDBOX_H */
