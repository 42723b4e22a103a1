// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * BENCHMARK ONLY: a UDP load generator that the kernel path, not the sender, limits.
 *
 * One thread per CPU given, pinned to it; each sends to its share of the flows (one
 * connected socket per flow, destination ports port..port+flows-1) in sendmmsg batches,
 * rotating over its flows, until the duration is up. Every socket has SO_PRIORITY; with
 * --txtime every datagram carries an SCM_TXTIME launch time (now + offset on the clock
 * given, read once per batch). Each payload starts with the launch time (0 without one; little
 * endian, as tests/lib/sender.py writes it for the observer to check), then the thread's
 * sequence number and the thread's and flow's index: no two datagrams are byte-identical.
 * --seconds 0 sends until SIGTERM or SIGINT.
 *
 * What the sender counts is what it handed to the kernel (UDP reports a full backlog as
 * success); scripts/bench measures what leaves the TSN NIC. Prints one JSON line:
 *   {"sent":N,"seconds":S,"errors":E,"threads":T,"flows":F,"userSeconds":U,"systemSeconds":K}
 * userSeconds against systemSeconds shows where the sender's CPUs went (the kernel path,
 * softirq included, runs in the sender's system time).
 *
 * Build: clang -O2 -Wall -Werror -pthread blast.c -o blast (scripts/bench/blast.ts).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_TXTIME
#define SO_TXTIME 61
#define SCM_TXTIME SO_TXTIME
#endif
#ifndef CLOCK_TAI
#define CLOCK_TAI 11
#endif

#define MAX_THREADS 64
#define MAX_FLOWS 1024
#define MAX_BATCH 1024
#define MAX_SIZE 9000
#define MIN_SIZE 24 /* launch time, sequence number, thread and flow */
#define HEAD 64 /* bytes of each datagram written per send; the rest is a shared pad */

struct sock_txtime_ {
	clockid_t clockid;
	uint32_t flags;
};

static struct {
	struct sockaddr_storage dst;
	socklen_t dstlen;
	int port, flows, prio, size, batch;
	double seconds;
	int txtime; /* 0: none; else the clock id + 1 */
	long long offset_ns;
	int cpus[MAX_THREADS];
	int ncpus;
} cfg = { .port = 9000, .flows = 8, .prio = 0, .size = 64, .batch = 64, .seconds = 1,
	  .offset_ns = 5000000 };

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

struct worker {
	pthread_t tid;
	int index, cpu;
	unsigned long long sent, errors;
	int failed;
	char why[160];
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: blast --dst ADDR [--port P] [--flows N] [--cpus 0,1] [--prio N]\n"
		"             [--size BYTES] [--batch N] [--seconds S]\n"
		"             [--txtime tai|realtime|monotonic] [--txtime-offset-ns N]\n");
	exit(2);
}

static long num(const char *flag, const char *s, long lo, long hi)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi) {
		fprintf(stderr, "blast: %s: expected an integer in %ld..%ld, got \"%s\"\n", flag, lo,
			hi, s);
		exit(2);
	}
	return v;
}

static void parse(int argc, char **argv)
{
	const char *dst = NULL;

	for (int i = 1; i < argc; i++) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			usage();
		i++;
		if (!strcmp(k, "--dst")) {
			dst = v;
		} else if (!strcmp(k, "--port")) {
			cfg.port = num(k, v, 1, 65535);
		} else if (!strcmp(k, "--flows")) {
			cfg.flows = num(k, v, 1, MAX_FLOWS);
		} else if (!strcmp(k, "--prio")) {
			cfg.prio = num(k, v, 0, 0x7fffffff);
		} else if (!strcmp(k, "--size")) {
			cfg.size = num(k, v, MIN_SIZE, MAX_SIZE);
		} else if (!strcmp(k, "--batch")) {
			cfg.batch = num(k, v, 1, MAX_BATCH);
		} else if (!strcmp(k, "--seconds")) {
			char *end;

			cfg.seconds = strtod(v, &end);
			if (*end || cfg.seconds < 0) {
				fprintf(stderr, "blast: --seconds: expected a number >= 0\n");
				exit(2);
			}
		} else if (!strcmp(k, "--txtime")) {
			if (!strcmp(v, "tai"))
				cfg.txtime = CLOCK_TAI + 1;
			else if (!strcmp(v, "realtime"))
				cfg.txtime = CLOCK_REALTIME + 1;
			else if (!strcmp(v, "monotonic"))
				cfg.txtime = CLOCK_MONOTONIC + 1;
			else
				usage();
		} else if (!strcmp(k, "--txtime-offset-ns")) {
			cfg.offset_ns = num(k, v, 0, 1000000000L);
		} else if (!strcmp(k, "--cpus")) {
			char *copy = strdup(v), *save = NULL;

			cfg.ncpus = 0;
			for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				if (cfg.ncpus == MAX_THREADS)
					usage();
				cfg.cpus[cfg.ncpus++] = num(k, t, 0, CPU_SETSIZE - 1);
			}
			free(copy);
		} else {
			usage();
		}
	}
	if (!dst)
		usage();
	memset(&cfg.dst, 0, sizeof(cfg.dst));
	if (strchr(dst, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&cfg.dst;

		a->sin6_family = AF_INET6;
		cfg.dstlen = sizeof(*a);
		if (inet_pton(AF_INET6, dst, &a->sin6_addr) != 1)
			usage();
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&cfg.dst;

		a->sin_family = AF_INET;
		cfg.dstlen = sizeof(*a);
		if (inet_pton(AF_INET, dst, &a->sin_addr) != 1)
			usage();
	}
	if (cfg.ncpus == 0) {
		cfg.cpus[0] = -1; /* one thread, not pinned */
		cfg.ncpus = 1;
	}
}

static int open_flow(int flow, char *why, size_t whylen)
{
	struct sockaddr_storage d = cfg.dst;
	int fd = socket(d.ss_family, SOCK_DGRAM, 0);

	if (fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return -1;
	}
	if (d.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&d)->sin6_port = htons(cfg.port + flow);
	else
		((struct sockaddr_in *)&d)->sin_port = htons(cfg.port + flow);
	if (setsockopt(fd, SOL_SOCKET, SO_PRIORITY, &cfg.prio, sizeof(cfg.prio)) < 0) {
		snprintf(why, whylen, "SO_PRIORITY %d: %s", cfg.prio, strerror(errno));
		goto fail;
	}
	if (cfg.txtime) {
		struct sock_txtime_ t = { .clockid = cfg.txtime - 1, .flags = 0 };

		if (setsockopt(fd, SOL_SOCKET, SO_TXTIME, &t, sizeof(t)) < 0) {
			snprintf(why, whylen, "SO_TXTIME: %s", strerror(errno));
			goto fail;
		}
	}
	/* Connected: the route is looked up once, and the kernel numbers the IP ids. */
	if (connect(fd, (struct sockaddr *)&d, cfg.dstlen) < 0) {
		snprintf(why, whylen, "connect: %s", strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

/* A thread's messages: one head (identity + up to 48 more bytes) per datagram, then the
 * shared pad for larger ones; one control buffer each for the launch time. */
struct batch {
	struct mmsghdr msgs[MAX_BATCH];
	struct iovec iov[MAX_BATCH][2];
	char head[MAX_BATCH][HEAD];
	char ctl[MAX_BATCH][CMSG_SPACE(sizeof(uint64_t))];
	char pad[MAX_SIZE];
};

static void *run(void *arg)
{
	struct worker *w = arg;
	int fds[MAX_FLOWS], nfds = 0;
	struct batch *b = calloc(1, sizeof(*b));
	uint64_t seq = 0;
	double end;

	if (!b) {
		snprintf(w->why, sizeof(w->why), "out of memory");
		w->failed = 1;
		return NULL;
	}
	if (w->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set)) {
			snprintf(w->why, sizeof(w->why), "pin to CPU %d failed", w->cpu);
			w->failed = 1;
			goto out;
		}
	}
	for (int f = w->index; f < cfg.flows; f += cfg.ncpus) {
		int fd = open_flow(f, w->why, sizeof(w->why));

		if (fd < 0) {
			w->failed = 1;
			goto out;
		}
		fds[nfds++] = fd;
	}
	memset(b->pad, 'p', sizeof(b->pad));
	for (int i = 0; i < cfg.batch; i++) {
		struct msghdr *m = &b->msgs[i].msg_hdr;

		b->iov[i][0].iov_base = b->head[i];
		b->iov[i][0].iov_len = cfg.size < HEAD ? cfg.size : HEAD;
		b->iov[i][1].iov_base = b->pad;
		b->iov[i][1].iov_len = cfg.size > HEAD ? cfg.size - HEAD : 0;
		m->msg_iov = b->iov[i];
		m->msg_iovlen = cfg.size > HEAD ? 2 : 1;
		if (cfg.txtime) {
			struct cmsghdr *c;

			m->msg_control = b->ctl[i];
			m->msg_controllen = sizeof(b->ctl[i]);
			c = CMSG_FIRSTHDR(m);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_TXTIME;
			c->cmsg_len = CMSG_LEN(sizeof(uint64_t));
		}
	}
	end = now_s() + cfg.seconds;
	for (unsigned long long round = 0; nfds; round++) {
		int k = round % nfds;
		uint64_t flow = w->index + (uint64_t)k * cfg.ncpus;
		uint64_t launch = 0;
		int n;

		if (cfg.txtime) {
			struct timespec ts;

			clock_gettime(cfg.txtime - 1, &ts);
			launch = (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec + cfg.offset_ns;
			for (int i = 0; i < cfg.batch; i++)
				memcpy(CMSG_DATA(CMSG_FIRSTHDR(&b->msgs[i].msg_hdr)), &launch,
				       sizeof(launch));
		}
		for (int i = 0; i < cfg.batch; i++) {
			uint64_t id[2] = { seq++, (uint64_t)w->index << 32 | flow };

			memcpy(b->head[i], &launch, sizeof(launch));
			memcpy(b->head[i] + 8, id, sizeof(id));
		}
		n = sendmmsg(fds[k], b->msgs, cfg.batch, 0);
		if (n < 0) {
			w->errors++;
			if (errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED &&
			    errno != EINTR) {
				snprintf(w->why, sizeof(w->why), "sendmmsg: %s", strerror(errno));
				w->failed = 1;
				goto out;
			}
		} else {
			w->sent += n;
		}
		if ((round & 7) == 7 && (stop || (cfg.seconds > 0 && now_s() >= end)))
			break;
	}
out:
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	free(b);
	return NULL;
}

int main(int argc, char **argv)
{
	struct worker w[MAX_THREADS] = {};
	unsigned long long sent = 0, errors = 0;
	struct rusage ru;
	double t0, t1;
	int failed = 0;

	parse(argc, argv);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	t0 = now_s();
	for (int i = 0; i < cfg.ncpus; i++) {
		w[i].index = i;
		w[i].cpu = cfg.cpus[i];
		if (pthread_create(&w[i].tid, NULL, run, &w[i])) {
			fprintf(stderr, "blast: pthread_create failed\n");
			return 1;
		}
	}
	for (int i = 0; i < cfg.ncpus; i++) {
		pthread_join(w[i].tid, NULL);
		sent += w[i].sent;
		errors += w[i].errors;
		if (w[i].failed) {
			fprintf(stderr, "blast: thread %d (CPU %d): %s\n", i, w[i].cpu, w[i].why);
			failed = 1;
		}
	}
	t1 = now_s();
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"sent\":%llu,\"seconds\":%.6f,\"errors\":%llu,\"threads\":%d,\"flows\":%d,"
	       "\"userSeconds\":%.6f,\"systemSeconds\":%.6f}\n",
	       sent, t1 - t0, errors, cfg.ncpus, cfg.flows,
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	return failed;
}
