/*
 * Standalone tests of the sandbox launcher (native/sandbox.c), in liburing's manner: each test
 * returns 0 on success, 1 on failure, 77 (T_SKIP) if the machine lacks what it needs (root,
 * user namespaces); under CI=true a missing capability is a failure instead. `make
 * test-native` builds this with AddressSanitizer and UndefinedBehaviorSanitizer.
 *
 *   test_sandbox            run every test
 *   test_sandbox NAME...    run the named ones
 *
 * The sandboxed program is this binary itself, run as `test_sandbox --inside ...`: it checks
 * from inside what it can see and do, and exits with the number of checks that failed.
 */
#define _GNU_SOURCE
#include "sandbox.h"

#include "helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif

/* The descriptor number the sandboxed child writes its "ok" to. */
#define PASSED_FD 5

static char self_path[PATH_MAX];

/* --- inside the sandbox ------------------------------------------------------------------ */

static int inside_failures;

/* Count (and print) a failed check of the sandboxed child. */
#define EXPECT(cond)                                                                            \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "  inside: %s:%d: %s (errno %d)\n", __FILE__, __LINE__, #cond,     \
                    errno);                                                                     \
            inside_failures++;                                                                  \
        }                                                                                       \
    } while (0)

/* Whether `call` (a system call's return) failed with `err`. */
#define FAILS_WITH(call, err) ((call) < 0 && errno == (err))

/* Whether /proc/self/status has the line `line` ("Seccomp:\t2"). */
static int status_has(const char *line)
{
    char buf[8192];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strstr(buf, line) != NULL;
}

/* The checks of `--inside PORT LEAKED_FD`: exit status = number of failed checks. */
static int inside(int port, int leaked_fd)
{
    EXPECT(getpid() == 1);
    EXPECT(getuid() == 0 && getgid() == 0);
    /* Only what was mounted exists. */
    EXPECT(FAILS_WITH(access("/etc/passwd", F_OK), ENOENT));
    EXPECT(FAILS_WITH(access("/etc/shadow", F_OK), ENOENT));
    EXPECT(FAILS_WITH(access("/home", F_OK), ENOENT));
    EXPECT(access(self_path, X_OK) == 0);
    /* Writable: /tmp only. */
    EXPECT(FAILS_WITH(open("/x", O_WRONLY | O_CREAT | O_CLOEXEC, 0600), EROFS));
    EXPECT(open(self_path, O_WRONLY | O_CLOEXEC) < 0 && (errno == EROFS || errno == EACCES));
    int tmp = open("/tmp/x", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    EXPECT(tmp >= 0 && write(tmp, "x", 1) == 1);
    close(tmp);
    /* No privileges, and the filter. */
    EXPECT(status_has("CapEff:\t0000000000000000"));
    EXPECT(status_has("CapBnd:\t0000000000000000"));
    EXPECT(status_has("NoNewPrivs:\t1"));
    EXPECT(status_has("Seccomp:\t2"));
    EXPECT(FAILS_WITH(mount("none", "/tmp", "tmpfs", 0, NULL), EPERM));
    EXPECT(FAILS_WITH(umount2("/tmp", MNT_DETACH), EPERM));
    EXPECT(FAILS_WITH(ptrace(PTRACE_TRACEME, 0, NULL, NULL), EPERM)); /* else allowed to all */
    EXPECT(FAILS_WITH(unshare(CLONE_NEWUSER), EPERM));                /* else allowed to all */
    EXPECT(FAILS_WITH(syscall(SYS_setns, 0, 0), EPERM));
    EXPECT(FAILS_WITH(syscall(SYS_keyctl, 0, 0, 0, 0, 0), EPERM));
    EXPECT(FAILS_WITH(syscall(SYS_bpf, 0, NULL, 0), EPERM));
    EXPECT(FAILS_WITH(syscall(SYS_reboot, 0, 0, 0, NULL), EPERM));
    EXPECT(FAILS_WITH(syscall(SYS_init_module, NULL, 0, NULL), EPERM));
    EXPECT(FAILS_WITH(syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0), EPERM));
    EXPECT(FAILS_WITH(syscall(__NR_clone3, NULL, 0), ENOSYS));
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0); /* the filter let a namespace flag through: the parent's check fails */
    EXPECT(pid < 0 && errno == EPERM);
    EXPECT(FAILS_WITH(socket(AF_VSOCK, SOCK_STREAM, 0), EAFNOSUPPORT));
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT(s >= 0);
    /* No network: the test's listener on the host's loopback is not reachable. */
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT(connect(s, (struct sockaddr *)&addr, sizeof addr) < 0);
    close(s);
    /* Ordinary work goes on: fork and wait. */
    pid_t child = fork();
    if (child == 0)
        _exit(7);
    int status = 0;
    EXPECT(child > 0 && waitpid(child, &status, 0) == child && WEXITSTATUS(status) == 7);
    /* Descriptors: the passed one works, the leaked one is gone. */
    EXPECT(write(PASSED_FD, "ok", 2) == 2);
    EXPECT(FAILS_WITH(fcntl(leaked_fd, F_GETFD), EBADF));
    return inside_failures;
}

/* --- the tests, outside -------------------------------------------------------------------- */

/* Everything a spec for running this binary needs, kept alive while it is used. */
struct self_spec {
    struct sandbox_spec spec;
    struct sandbox_mount mounts[8];
    struct sandbox_symlink links[8];
    char link_targets[8][PATH_MAX];
    char *argv[6];
    char root[64];
};

/* Library directories to mirror: bound if directories, recreated if symlinks. */
static const char *const library_dirs[] = {"/lib", "/lib64", "/usr/lib", "/usr/lib64"};

/* A spec that runs this binary with `argv` in a sandbox built on a fresh temporary root. */
static int self_spec_init(struct self_spec *s, char **argv)
{
    memset(s, 0, sizeof *s);
    strcpy(s->root, "/tmp/test_sandbox.XXXXXX");
    if (!mkdtemp(s->root))
        return -errno;
    size_t nm = 0, nl = 0;
    for (size_t i = 0; i < sizeof library_dirs / sizeof library_dirs[0]; i++) {
        struct stat st;
        if (lstat(library_dirs[i], &st) < 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlink(library_dirs[i], s->link_targets[nl], PATH_MAX - 1);
            if (n <= 0)
                continue;
            s->link_targets[nl][n] = '\0';
            s->links[nl].path = library_dirs[i];
            s->links[nl].target = s->link_targets[nl];
            nl++;
        } else if (S_ISDIR(st.st_mode)) {
            s->mounts[nm].source = s->mounts[nm].target = library_dirs[i];
            nm++;
        }
    }
    if (access("/etc/ld.so.cache", R_OK) == 0) {
        s->mounts[nm].source = s->mounts[nm].target = "/etc/ld.so.cache";
        nm++;
    }
    s->mounts[nm].source = s->mounts[nm].target = self_path;
    nm++;
    static char *const envp[] = {"ASAN_OPTIONS=detect_leaks=0", /* LSan needs ptrace: denied */
                                 "UBSAN_OPTIONS=print_stacktrace=1", NULL};
    s->spec = (struct sandbox_spec){
        .path = self_path,
        .argv = argv,
        .envp = envp,
        .root = s->root,
        .cwd = "/tmp",
        .hostname = "test",
        .mounts = s->mounts,
        .n_mounts = nm,
        .symlinks = s->links,
        .n_symlinks = nl,
        .tmp_size = 1 << 20,
        .uid = 100000,
        .gid = 100000,
        .netns_fd = -1,
    };
    return 0;
}

/* Wait for the sandbox `child` and return its exit code (-signal if killed). */
static int wait_child(struct sandbox_child *child)
{
    int status = 0;
    while (waitpid(child->pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1000;
    }
    close(child->pidfd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* A listening TCP socket on the host's loopback (its address in `addr`), or -1: what a
 * sandbox must not reach. */
static int loopback_listener(struct sockaddr_in *addr)
{
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)addr, sizeof *addr) < 0 ||
        listen(listener, 1) < 0 || getsockname(listener, (struct sockaddr *)addr, &len) < 0) {
        if (listener >= 0)
            close(listener);
        return -1;
    }
    return listener;
}

/* Give the sandbox `write_fd` at PASSED_FD, and the caller's stderr. */
static void pass_pipe(struct self_spec *s, struct sandbox_fd fds[2], int write_fd)
{
    fds[0] = (struct sandbox_fd){write_fd, PASSED_FD};
    fds[1] = (struct sandbox_fd){2, 2};
    s->spec.fds = fds;
    s->spec.n_fds = 2;
}

/* The started `child` passes its checks: it exits 0, says "ok" through the passed pipe
 * (`pipefd`), and nothing of it reaches `listener`. Closes the test's descriptors. */
static int child_passed(struct sandbox_child *child, int pipefd[2], int leaked, int listener)
{
    close(pipefd[1]);
    CHECK_RC(wait_child(child), 0);
    char buf[8] = {0};
    CHECK_RC(read(pipefd[0], buf, sizeof buf), 2);
    CHECK(memcmp(buf, "ok", 2) == 0);
    CHECK(accept(listener, NULL, NULL) < 0 && errno == EAGAIN); /* nothing came through */
    close(pipefd[0]);
    close(leaked);
    close(listener);
    return T_OK;
}

/* Isolation, privileges, the filter and descriptors, checked by the child itself. */
static int test_isolation(void)
{
    struct sockaddr_in addr;
    int listener = loopback_listener(&addr);
    CHECK(listener >= 0);
    int leaked = open("/dev/null", O_RDONLY); /* inheritable on purpose */
    int pipefd[2];
    CHECK(leaked >= 0 && pipe2(pipefd, O_CLOEXEC) == 0);

    char port[16], leaked_arg[16];
    snprintf(port, sizeof port, "%d", ntohs(addr.sin_port));
    snprintf(leaked_arg, sizeof leaked_arg, "%d", leaked);
    char *argv[] = {self_path, "--inside", port, leaked_arg, NULL};
    struct self_spec s;
    CHECK_RC(self_spec_init(&s, argv), 0);
    struct sandbox_fd fds[2];
    pass_pipe(&s, fds, pipefd[1]);
    struct sandbox_child child;
    CHECK_RC(sandbox_spawn(&s.spec, &child), 0);
    CHECK_RC(child_passed(&child, pipefd, leaked, listener), T_OK);
    CHECK(rmdir(s.root) == 0); /* nothing was written to the host directory */
    return T_OK;
}

/* sandbox_fork: the child returns in its finished sandbox and passes the same checks as an
 * exec'd one; a descriptor it was not given is closed, not just close-on-exec. */
static int test_fork(void)
{
    struct sockaddr_in addr;
    int listener = loopback_listener(&addr);
    CHECK(listener >= 0);
    int leaked = open("/dev/null", O_RDONLY | O_CLOEXEC); /* close-on-exec: still closed */
    int pipefd[2];
    CHECK(leaked >= 0 && pipe2(pipefd, O_CLOEXEC) == 0);
    char *argv[] = {self_path, NULL};
    struct self_spec s;
    CHECK_RC(self_spec_init(&s, argv), 0);
    struct sandbox_fd fds[2];
    pass_pipe(&s, fds, pipefd[1]);
    struct sandbox_child child;
    int rc = sandbox_fork(&s.spec, &child);
    if (rc == 0 && child.pid == 0) {
        /* The child finds its steps' times in order: a cold start's breakdown. */
        for (int i = 1; i < SANDBOX_STAMPS; i++) {
            if (child.stamps[i] < child.stamps[i - 1] || child.stamps[i - 1] == 0)
                _exit(100 + i);
        }
        _exit(inside(ntohs(addr.sin_port), leaked));
    }
    CHECK_RC(rc, 0);
    CHECK(child.pid > 0 && child.pidfd >= 0);
    CHECK_RC(child_passed(&child, pipefd, leaked, listener), T_OK);

    /* A failed step is reported in the parent, as sandbox_spawn's are. */
    struct sandbox_mount missing[] = {{"/no/such/source", "/x", 0}};
    s.spec.fds = NULL;
    s.spec.n_fds = 0;
    s.spec.mounts = missing;
    s.spec.n_mounts = 1;
    rc = sandbox_fork(&s.spec, &child);
    if (rc == 0 && child.pid == 0)
        _exit(99); /* cannot happen: the child failed before returning */
    CHECK_RC(rc, -ENOENT);
    CHECK(strstr(child.error, "open /no/such/source") != NULL);
    CHECK(rmdir(s.root) == 0);
    return T_OK;
}

/* Bad specs are refused in the parent; failed steps name themselves. */
static int test_errors(void)
{
    char *argv[] = {self_path, "--inside-exit", "0", NULL};
    struct self_spec s;
    CHECK_RC(self_spec_init(&s, argv), 0);
    struct sandbox_child child;
    CHECK_RC(sandbox_spawn(NULL, &child), -EINVAL);

    struct sandbox_spec bad = s.spec;
    bad.path = "relative";
    CHECK_RC(sandbox_spawn(&bad, &child), -EINVAL);
    bad = s.spec;
    bad.cwd = "/tmp/../etc";
    CHECK_RC(sandbox_spawn(&bad, &child), -EINVAL);
    bad = s.spec;
    bad.tmp_size = 0;
    CHECK_RC(sandbox_spawn(&bad, &child), -EINVAL);
    bad = s.spec;
    struct sandbox_fd closed[] = {{1000, 3}};
    bad.fds = closed;
    bad.n_fds = 1;
    CHECK_RC(sandbox_spawn(&bad, &child), -EBADF);

    bad = s.spec;
    bad.path = "/not/there";
    CHECK_RC(sandbox_spawn(&bad, &child), -ENOENT);
    CHECK(strstr(child.error, "execute /not/there") != NULL);
    CHECK(child.pid == -1 && child.pidfd == -1);

    struct sandbox_mount missing[] = {{"/no/such/source", "/x", 0}};
    bad = s.spec;
    bad.mounts = missing;
    bad.n_mounts = 1;
    CHECK_RC(sandbox_spawn(&bad, &child), -ENOENT);
    CHECK(strstr(child.error, "open /no/such/source") != NULL);

    /* A symlink inside a bound directory cannot carry a mount point out of the new root. */
    char dir[] = "/tmp/test_sandbox_link.XXXXXX", link[PATH_MAX], target[PATH_MAX];
    CHECK(mkdtemp(dir) != NULL && chmod(dir, 0755) == 0); /* searchable by the sandbox */
    snprintf(link, sizeof link, "%s/escape", dir);
    CHECK(symlink("/etc", link) == 0);
    snprintf(target, sizeof target, "%s/escape/x", dir);
    struct sandbox_mount through[] = {{dir, dir, 0}, {"/etc/hostname", target, 0}};
    bad = s.spec;
    bad.mounts = through;
    bad.n_mounts = 2;
    int rc = sandbox_spawn(&bad, &child);
    if (rc != -ENOTDIR && rc != -ELOOP)
        fprintf(stderr, "  through a symlink: %d (%s) at %s\n", rc, strerror(-rc), child.error);
    CHECK(rc == -ENOTDIR || rc == -ELOOP);
    CHECK(strstr(child.error, "make mount point") != NULL);
    CHECK(unlink(link) == 0 && rmdir(dir) == 0);
    CHECK(rmdir(s.root) == 0);
    return T_OK;
}

struct worker_arg {
    int index;
    int failures;
};

/* Spawn four sandboxes in a row from one thread; count wrong exit codes. */
static void *spawn_some(void *p)
{
    struct worker_arg *w = p;
    for (int i = 0; i < 4; i++) {
        char code[16];
        snprintf(code, sizeof code, "%d", w->index * 4 + i);
        char *argv[] = {self_path, "--inside-exit", code, NULL};
        struct self_spec s;
        struct sandbox_child child;
        if (self_spec_init(&s, argv) < 0 || sandbox_spawn(&s.spec, &child) < 0 ||
            wait_child(&child) != w->index * 4 + i)
            w->failures++;
        rmdir(s.root);
    }
    return NULL;
}

/* Spawning from several threads at once: each child gets its own pipes and exit code. */
static int test_threads(void)
{
    pthread_t threads[4];
    struct worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){i, 0};
        CHECK(pthread_create(&threads[i], NULL, spawn_some, &args[i]) == 0);
    }
    int failures = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        failures += args[i].failures;
    }
    CHECK_RC(failures, 0);
    return T_OK;
}

/* The filter exists for this architecture and the launcher says so. */
static int test_features(void)
{
    CHECK(sandbox_features() & SANDBOX_HAVE_SECCOMP);
    return T_OK;
}

static const struct test tests[] = {
    {"features", test_features},
    {"isolation", test_isolation},
    {"errors", test_errors},
    {"threads", test_threads},
    {"fork", test_fork},
};

/* Why sandboxes cannot run here, or NULL. */
static const char *missing_capability(void)
{
    if (geteuid() != 0)
        return "needs root (uid maps to another uid, mounts)";
    FILE *f = fopen("/proc/sys/user/max_user_namespaces", "r");
    int max = 1;
    if (f) {
        if (fscanf(f, "%d", &max) != 1)
            max = 1;
        fclose(f);
    }
    if (max == 0)
        return "user namespaces are disabled (user.max_user_namespaces = 0)";
    return NULL;
}

int main(int argc, char **argv)
{
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (n <= 0) {
        perror("readlink /proc/self/exe");
        return T_FAIL;
    }
    self_path[n] = '\0';
    if (argc == 4 && strcmp(argv[1], "--inside") == 0)
        return inside(atoi(argv[2]), atoi(argv[3]));
    if (argc == 3 && strcmp(argv[1], "--inside-exit") == 0)
        return atoi(argv[2]);

    signal(SIGPIPE, SIG_IGN);
    const char *missing = missing_capability();
    if (missing) {
        const char *ci = getenv("CI");
        int in_ci = ci && strcmp(ci, "true") == 0;
        fprintf(stderr, "%s: %s\n", in_ci ? "FAIL (CI=true)" : "skip", missing);
        return in_ci ? T_FAIL : T_SKIP;
    }
    return run_tests(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
}
