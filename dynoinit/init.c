/*
 * Slipway's dyno init: PID 1 of every dyno container, bind-mounted read-only at
 * /.slipway/init. The wire formats are contracts/dynoinit.py's; README.md next to
 * this file says what the init does and why.
 *
 *   init [--tty | --pipe] [--buffer BYTES] [--socket PATH] [--env-timeout SECONDS] -- COMMAND...
 *
 * Static, no runtime: it must run in any image, including ones without a libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define ENV_MAGIC "SLPWENV1"
#define ENV_MAX (1u << 20)
#define LOG_MAGIC "SLPWLOG1"
#define TTY_READY "\x1b_SLPWRDY\x1b\\"
#define TTY_GO "\x1b_SLPWGO\x1b\\"
#define MAX_LINE 16384
#define HEADER 16
#define KIND_STDOUT 1
#define KIND_STDERR 2
#define KIND_DROPPED 3
#define DEFAULT_SOCKET "/.slipway/log/logs.sock"
#define DEFAULT_BUFFER (1u << 20)
#define MIN_BUFFER 64
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define DRAIN_MS 1000  /* reading the pipes after the command exited */
#define FLUSH_MS 2000  /* writing what is left to the socket after that */
#define DEFAULT_ENV_TIMEOUT_MS 60000

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

/* ---- small helpers ------------------------------------------------------------------ */

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t real_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void put_be32(uint8_t *p, uint32_t v) {
    for (int i = 3; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

static void write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        p += n;
        len -= (size_t)n;
    }
}

/* ---- the ring of records waiting for the socket ------------------------------------- */

struct ring {
    uint8_t *buf;
    size_t cap, head, len; /* bytes queued from head, wrapping at cap */
    size_t head_left;      /* bytes of the head record not yet sent (0: none started) */
    size_t head_size;      /* its whole size */
    uint8_t head_copy[HEADER + 16]; /* its start: sent bytes may be overwritten meanwhile */
    uint64_t dropped;      /* lines not queued since the last dropped record */
    uint64_t dropped_since;
};

static struct ring ring;

static void ring_peek(size_t off, uint8_t *dst, size_t n) {
    size_t at = (ring.head + off) % ring.cap;
    size_t first = ring.cap - at < n ? ring.cap - at : n;
    memcpy(dst, ring.buf + at, first);
    memcpy(dst + first, ring.buf, n - first);
}

static void ring_put(const uint8_t *src, size_t n) {
    size_t tail = (ring.head + ring.len) % ring.cap;
    size_t first = ring.cap - tail < n ? ring.cap - tail : n;
    memcpy(ring.buf + tail, src, first);
    memcpy(ring.buf, src + first, n - first);
    ring.len += n;
}

/* The head is at a record boundary: remember the record's size and its first bytes. */
static void ring_start_head(void) {
    uint8_t header[HEADER];
    ring_peek(0, header, HEADER);
    ring.head_size = ring.head_left = HEADER + (size_t)get_be(header + 4, 4);
    ring_peek(0, ring.head_copy, ring.head_size < sizeof ring.head_copy ? ring.head_size : sizeof ring.head_copy);
}

static void ring_append(int kind, uint64_t time_ns, const uint8_t *payload, size_t len) {
    uint8_t header[HEADER] = {0};
    header[0] = (uint8_t)kind;
    put_be32(header + 4, (uint32_t)len);
    put_be64(header + 8, time_ns);
    ring_put(header, HEADER);
    ring_put(payload, len);
}

/* Queue one output line; a full ring drops it and counts it. A dropped record goes in
 * first, where the lines went missing, as soon as there is room for both. */
static void queue_line(int kind, const uint8_t *line, size_t len) {
    uint64_t t = real_ns();
    size_t need = HEADER + len + (ring.dropped ? HEADER + 16 : 0);
    if (ring.cap - ring.len < need) {
        if (ring.dropped++ == 0) ring.dropped_since = t;
        return;
    }
    if (ring.dropped) {
        uint8_t payload[16];
        put_be64(payload, ring.dropped);
        put_be64(payload + 8, ring.dropped_since);
        ring_append(KIND_DROPPED, t, payload, 16);
        ring.dropped = 0;
    }
    ring_append(kind, t, line, len);
}

static void queue_dropped_if_room(void) {
    if (ring.dropped && ring.cap - ring.len >= HEADER + 16) {
        uint8_t payload[16];
        put_be64(payload, ring.dropped);
        put_be64(payload + 8, ring.dropped_since);
        ring_append(KIND_DROPPED, real_ns(), payload, 16);
        ring.dropped = 0;
    }
}

/* The connection broke in the middle of the head record: the receiver threw its start
 * away, so the rest goes too, and it counts as dropped. */
static void ring_abandon_partial_head(void) {
    if (ring.head_left == 0 || ring.head_left == ring.head_size) return;
    const uint8_t *start = ring.head_copy;
    ring.head = (ring.head + ring.head_left) % ring.cap;
    ring.len -= ring.head_left;
    uint64_t count = 1, since = get_be(start + 8, 8);
    if (start[0] == KIND_DROPPED) {
        count = get_be(start + HEADER, 8);
        since = get_be(start + HEADER + 8, 8);
    }
    if (ring.dropped == 0 || since < ring.dropped_since) ring.dropped_since = since;
    ring.dropped += count;
    ring.head_left = ring.head_size = 0;
    if (ring.len > 0) ring_start_head();
}

static void ring_consume(size_t n) {
    while (n > 0) {
        if (ring.head_left == 0) ring_start_head();
        size_t take = n < ring.head_left ? n : ring.head_left;
        ring.head = (ring.head + take) % ring.cap;
        ring.len -= take;
        ring.head_left -= take;
        n -= take;
    }
    if (ring.len > 0 && ring.head_left == 0) ring_start_head();
}

/* ---- the log socket ----------------------------------------------------------------- */

struct link {
    const char *path;
    int fd;               /* -1: not connected */
    size_t magic_sent;    /* of LOG_MAGIC, on this connection */
    int64_t retry_at;     /* when to connect again */
    int backoff_ms;
};

static struct link link_ = {.fd = -1, .backoff_ms = BACKOFF_MIN_MS};

static void link_down(void) {
    if (link_.fd >= 0) close(link_.fd);
    link_.fd = -1;
    ring_abandon_partial_head();
    link_.retry_at = now_ms() + link_.backoff_ms;
    link_.backoff_ms = link_.backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : link_.backoff_ms * 2;
}

static void link_try(void) {
    if (link_.fd >= 0 || now_ms() < link_.retry_at) return;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, link_.path, sizeof addr.sun_path - 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        link_down();
        return;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(fd);
        link_down();
        return;
    }
    link_.fd = fd;
    link_.magic_sent = 0;
}

static int link_pending(void) {
    return link_.fd >= 0 && (link_.magic_sent < 8 || ring.len > 0);
}

/* Send what the socket takes without blocking; a broken socket is dropped for a retry. */
static void link_send(void) {
    while (link_pending()) {
        struct iovec iov[3];
        int n = 0;
        if (link_.magic_sent < 8) {
            iov[n].iov_base = (char *)LOG_MAGIC + link_.magic_sent;
            iov[n++].iov_len = 8 - link_.magic_sent;
        }
        size_t first = ring.cap - ring.head < ring.len ? ring.cap - ring.head : ring.len;
        if (first > 0) {
            iov[n].iov_base = ring.buf + ring.head;
            iov[n++].iov_len = first;
        }
        if (ring.len > first) {
            iov[n].iov_base = ring.buf;
            iov[n++].iov_len = ring.len - first;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t sent = sendmsg(link_.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) link_down();
            return;
        }
        size_t s = (size_t)sent;
        if (link_.magic_sent < 8) {
            size_t m = 8 - link_.magic_sent < s ? 8 - link_.magic_sent : s;
            link_.magic_sent += m;
            s -= m;
        }
        if (s > 0) {
            ring_consume(s);
            link_.backoff_ms = BACKOFF_MIN_MS; /* a receiver that takes records is a good one */
        }
    }
}

/* The receiver sends nothing: readable means it closed (or misbehaves). */
static void link_readable(void) {
    char scratch[256];
    ssize_t n = recv(link_.fd, scratch, sizeof scratch, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) link_down();
}

/* ---- messages of the init itself ---------------------------------------------------- */

static int relaying;

static void say(const char *fmt, ...) {
    char text[512];
    int len = snprintf(text, sizeof text, "slipway-init: ");
    va_list ap;
    va_start(ap, fmt);
    len += vsnprintf(text + len, sizeof text - (size_t)len, fmt, ap);
    va_end(ap);
    if (len >= (int)sizeof text) len = sizeof text - 1;
    if (relaying) queue_line(KIND_STDERR, (const uint8_t *)text, (size_t)len);
    text[len] = '\n';
    write_all(2, text, (size_t)len + 1);
}

/* ---- output pipes ------------------------------------------------------------------- */

struct stream {
    int fd, kind;
    uint8_t line[MAX_LINE];
    size_t used;
};

static void stream_feed(struct stream *s, const uint8_t *p, size_t n) {
    while (n > 0) {
        const uint8_t *nl = memchr(p, '\n', n);
        size_t seg = nl ? (size_t)(nl - p) : n;
        while (seg > 0) {
            if (s->used == MAX_LINE) {
                queue_line(s->kind, s->line, s->used);
                s->used = 0;
            }
            size_t take = MAX_LINE - s->used < seg ? MAX_LINE - s->used : seg;
            memcpy(s->line + s->used, p, take);
            s->used += take;
            p += take;
            n -= take;
            seg -= take;
        }
        if (nl) {
            queue_line(s->kind, s->line, s->used);
            s->used = 0;
            p++;
            n--;
        }
    }
}

static void stream_close(struct stream *s) {
    if (s->fd < 0) return;
    if (s->used > 0) queue_line(s->kind, s->line, s->used);
    s->used = 0;
    close(s->fd);
    s->fd = -1;
}

static void stream_read(struct stream *s) {
    uint8_t chunk[65536];
    ssize_t n = read(s->fd, chunk, sizeof chunk);
    if (n > 0)
        stream_feed(s, chunk, (size_t)n);
    else if (n == 0 || (errno != EAGAIN && errno != EINTR))
        stream_close(s);
}

/* ---- the env frame ------------------------------------------------------------------ */

static int sigfd = -1;
static int pending_signal;

/* Read exactly n bytes from fd, never more (a one-off's later input is its command's).
 * 0 on success; -1 on end of input, an error, the deadline, or a terminating signal. */
static int read_exact(int fd, uint8_t *dst, size_t n, int64_t deadline) {
    size_t got = 0;
    while (got < n) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = sigfd, .events = POLLIN}};
        if (poll(fds, 2, (int)left) < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (fds[1].revents & POLLIN) {
            struct signalfd_siginfo info;
            if (read(sigfd, &info, sizeof info) == (ssize_t)sizeof info && info.ssi_signo != SIGCHLD) {
                pending_signal = (int)info.ssi_signo;
                errno = EINTR;
                return -1;
            }
        }
        if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t r = read(fd, dst + got, n - got);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r <= 0) {
            if (r == 0) errno = EPIPE;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

/* The frame's entries, checked whole before any is set: KEY=VALUE joined by NUL. */
static int apply_env(uint8_t *payload, size_t len) {
    if (len == 0) return 0;
    for (size_t start = 0; start <= len;) {
        uint8_t *end = memchr(payload + start, '\0', len - start);
        size_t stop = end ? (size_t)(end - payload) : len;
        uint8_t *eq = memchr(payload + start, '=', stop - start);
        if (eq == NULL || eq == payload + start) return -1;
        start = stop + 1;
    }
    payload[len] = '\0';
    for (size_t start = 0; start <= len;) {
        char *entry = (char *)payload + start;
        size_t entry_len = strlen(entry);
        char *eq = strchr(entry, '=');
        *eq = '\0';
        if (setenv(entry, eq + 1, 1) != 0) return -1;
        start += entry_len + 1;
    }
    return 0;
}

static int read_env_frame(int64_t timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;
    uint8_t header[12];
    if (read_exact(0, header, sizeof header, deadline) != 0) {
        if (pending_signal) return -1;
        say("refused the env frame: no complete header on stdin (%s)", strerror(errno));
        return -1;
    }
    if (memcmp(header, ENV_MAGIC, 8) != 0) {
        say("refused the env frame: it does not start with " ENV_MAGIC);
        return -1;
    }
    uint32_t len = (uint32_t)get_be(header + 8, 4);
    if (len > ENV_MAX) {
        say("refused the env frame: %u bytes is more than %u", len, ENV_MAX);
        return -1;
    }
    uint8_t *payload = malloc((size_t)len + 1);
    if (payload == NULL) {
        say("refused the env frame: out of memory");
        return -1;
    }
    if (read_exact(0, payload, len, deadline) != 0) {
        free(payload);
        if (pending_signal) return -1;
        say("refused the env frame: it ended early (%s)", strerror(errno));
        return -1;
    }
    if (apply_env(payload, len) != 0) {
        free(payload);
        say("refused the env frame: an entry is not KEY=VALUE");
        return -1;
    }
    free(payload);
    return 0;
}

/* ---- the command -------------------------------------------------------------------- */

static sigset_t original_mask;

static pid_t spawn(char **argv, int out_fd, int err_fd, int tty) {
    pid_t pid = fork();
    if (pid != 0) {
        if (pid > 0) setpgid(pid, pid);
        return pid;
    }
    setpgid(0, 0);
    if (tty && isatty(0)) {
        /* Its own group in the foreground: the terminal's Ctrl-C reaches it, not PID 1. */
        signal(SIGTTOU, SIG_IGN);
        tcsetpgrp(0, getpid());
        signal(SIGTTOU, SIG_DFL);
    }
    if (out_fd >= 0) dup2(out_fd, 1);
    if (err_fd >= 0) dup2(err_fd, 2);
    sigprocmask(SIG_SETMASK, &original_mask, NULL);
    execvp(argv[0], argv);
    int code = errno == ENOENT ? 127 : 126;
    dprintf(2, "slipway-init: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(code);
}

static int exit_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

static pid_t child = -1;
static int child_status = -1;

/* Forward one signal to the command's group, or reap. Returns 1 when the command ended. */
static int on_signal(void) {
    struct signalfd_siginfo info;
    int ended = 0;
    while (read(sigfd, &info, sizeof info) == (ssize_t)sizeof info) {
        if (info.ssi_signo != SIGCHLD) {
            if (child > 0 && kill(-child, (int)info.ssi_signo) < 0) kill(child, (int)info.ssi_signo);
            continue;
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            if (pid == child) {
                child_status = status;
                ended = 1;
            }
        }
    }
    return ended;
}

/* ---- the two modes ------------------------------------------------------------------ */

/* After the frame, until every line is written or the bounded flush is over. */
static void flush_and_exit(int code) {
    queue_dropped_if_room();
    int64_t deadline = now_ms() + FLUSH_MS;
    if (link_.fd < 0) link_.retry_at = now_ms(); /* a last chance now, not after the backoff */
    while (now_ms() < deadline) {
        link_try();
        link_send();
        queue_dropped_if_room(); /* the count, once the lines before it made room */
        link_send();
        if (ring.len == 0 && ring.dropped == 0 && (link_.fd < 0 || !link_pending())) break;
        int64_t wake = link_.fd >= 0 ? deadline : (link_.retry_at < deadline ? link_.retry_at : deadline);
        struct pollfd p = {.fd = link_.fd, .events = POLLOUT | POLLIN};
        int timeout = (int)(wake - now_ms());
        poll(&p, link_.fd >= 0 ? 1 : 0, timeout > 0 ? timeout : 0);
        if (link_.fd >= 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
            if (p.revents & POLLIN) link_readable();
            else link_down();
        }
    }
    exit(code);
}

static int run_relay(char **argv, int64_t env_timeout) {
    relaying = 1;
    link_try();
    if (read_env_frame(env_timeout) != 0) {
        if (pending_signal) exit(128 + pending_signal);
        flush_and_exit(1);
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        say("cannot make pipes: %s", strerror(errno));
        flush_and_exit(1);
    }
    child = spawn(argv, out[1], err[1], 0);
    close(out[1]);
    close(err[1]);
    if (child < 0) {
        say("cannot fork: %s", strerror(errno));
        flush_and_exit(1);
    }
    static struct stream streams[2];
    streams[0].fd = out[0];
    streams[0].kind = KIND_STDOUT;
    streams[1].fd = err[0];
    streams[1].kind = KIND_STDERR;
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    int64_t drain_until = -1;
    for (;;) {
        if (child_status >= 0) {
            if (drain_until < 0) drain_until = now_ms() + DRAIN_MS;
            if ((streams[0].fd < 0 && streams[1].fd < 0) || now_ms() >= drain_until) break;
        }
        link_try();
        link_send();
        struct pollfd fds[4];
        int n = 0;
        fds[n++] = (struct pollfd){.fd = sigfd, .events = POLLIN};
        int at_out = -1, at_err = -1, at_link = -1;
        if (streams[0].fd >= 0) at_out = n, fds[n++] = (struct pollfd){.fd = streams[0].fd, .events = POLLIN};
        if (streams[1].fd >= 0) at_err = n, fds[n++] = (struct pollfd){.fd = streams[1].fd, .events = POLLIN};
        if (link_.fd >= 0)
            at_link = n, fds[n++] = (struct pollfd){
                .fd = link_.fd, .events = (short)(POLLIN | (link_pending() ? POLLOUT : 0))};
        int64_t wake = -1;
        if (link_.fd < 0) wake = link_.retry_at;
        if (drain_until >= 0 && (wake < 0 || drain_until < wake)) wake = drain_until;
        int timeout = wake < 0 ? -1 : (int)(wake - now_ms() > 0 ? wake - now_ms() : 0);
        if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR) break;
        if (fds[0].revents & POLLIN) on_signal();
        if (at_out >= 0 && fds[at_out].revents) stream_read(&streams[0]);
        if (at_err >= 0 && fds[at_err].revents) stream_read(&streams[1]);
        if (at_link >= 0 && link_.fd >= 0) {
            short ev = fds[at_link].revents;
            if (ev & POLLIN) link_readable();
            else if (ev & (POLLHUP | POLLERR)) link_down();
        }
    }
    stream_close(&streams[0]);
    stream_close(&streams[1]);
    flush_and_exit(exit_code(child_status));
    return 1;
}

static int run_tty(char **argv, int64_t env_timeout) {
    struct termios saved, raw;
    int is_tty = isatty(0) && tcgetattr(0, &saved) == 0;
    if (is_tty) {
        /* No echo and no line editing: the frame's values never show, its bytes pass as-is. */
        raw = saved;
        cfmakeraw(&raw);
        tcsetattr(0, TCSANOW, &raw);
    }
    write_all(1, TTY_READY, sizeof TTY_READY - 1);
    int failed = read_env_frame(env_timeout);
    if (is_tty) tcsetattr(0, TCSANOW, &saved);
    if (failed) return pending_signal ? 128 + pending_signal : 1;
    /* Input typed from now on is read in the terminal's own mode, as lines. */
    write_all(1, TTY_GO, sizeof TTY_GO - 1);
    child = spawn(argv, -1, -1, 1);
    if (child < 0) {
        say("cannot fork: %s", strerror(errno));
        return 1;
    }
    for (;;) {
        struct pollfd p = {.fd = sigfd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0 && errno != EINTR) return 1;
        if (on_signal()) return exit_code(child_status);
    }
}

/* Attached without a terminal: after the frame, the command inherits the container's stdin,
 * stdout and stderr (Docker's attach stream), so piped input reaches it byte for byte and its
 * end (the attach's stdin closed) is the command's EOF. */
static int run_pipe(char **argv, int64_t env_timeout) {
    if (read_env_frame(env_timeout) != 0) return pending_signal ? 128 + pending_signal : 1;
    child = spawn(argv, -1, -1, 0);
    if (child < 0) {
        say("cannot fork: %s", strerror(errno));
        return 1;
    }
    /* PID 1 keeps no copy of the pipes' ends: the command's EOF and SIGPIPE are its own. */
    close(0);
    for (;;) {
        struct pollfd p = {.fd = sigfd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0 && errno != EINTR) return 1;
        if (on_signal()) return exit_code(child_status);
    }
}

static void usage(void) {
    say("usage: init [--tty | --pipe] [--buffer BYTES] [--socket PATH] [--env-timeout SECONDS] -- COMMAND...");
    exit(2);
}

int main(int argc, char **argv) {
    int tty = 0, pipe_mode = 0;
    size_t buffer = DEFAULT_BUFFER;
    int64_t env_timeout = DEFAULT_ENV_TIMEOUT_MS;
    link_.path = DEFAULT_SOCKET;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strcmp(argv[i], "--tty") == 0) {
            tty = 1;
        } else if (strcmp(argv[i], "--pipe") == 0) {
            pipe_mode = 1;
        } else if (strcmp(argv[i], "--buffer") == 0 && i + 1 < argc) {
            buffer = strtoul(argv[++i], NULL, 10);
            if (buffer < MIN_BUFFER) usage();
        } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            link_.path = argv[++i];
            if (strlen(link_.path) >= sizeof((struct sockaddr_un *)0)->sun_path) usage();
        } else if (strcmp(argv[i], "--env-timeout") == 0 && i + 1 < argc) {
            env_timeout = (int64_t)strtoul(argv[++i], NULL, 10) * 1000;
        } else {
            usage();
        }
    }
    if (i >= argc) {
        say("no command given");
        return 64;
    }
    sigset_t mask;
    sigemptyset(&mask);
    for (size_t k = 0; k < sizeof forwarded / sizeof forwarded[0]; k++) sigaddset(&mask, forwarded[k]);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, &original_mask);
    sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigfd < 0) {
        say("signalfd: %s", strerror(errno));
        return 1;
    }
    if (tty && pipe_mode) usage();
    if (tty) return run_tty(argv + i, env_timeout);
    if (pipe_mode) return run_pipe(argv + i, env_timeout);
    ring.cap = buffer;
    ring.buf = malloc(buffer);
    if (ring.buf == NULL) {
        say("cannot allocate a %zu-byte buffer", buffer);
        return 1;
    }
    return run_relay(argv + i, env_timeout);
}
