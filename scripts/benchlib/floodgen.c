/* The flood generator's sending loop in C (benchlib/flood.py builds and runs
 * it when a C compiler is there; Python alone tops out at ~50,000/s here).
 *
 *   floodgen TARGET_IP PORT RATE DURATION MESSAGES_FILE SOURCE_IP...
 *
 * MESSAGES_FILE holds 148-byte initiations end to end (made in Python, with a
 * valid mac1). One UDP socket per source address; batches of 16 datagrams go
 * out with sendmmsg, round-robin over the sockets, paced at RATE per second
 * (0: as fast as possible) for DURATION seconds. Prints one JSON line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 148
#define BATCH 16

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: floodgen TARGET PORT RATE DURATION MESSAGES SOURCE...\n");
        return 2;
    }
    struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &target.sin_addr);
    double rate = atof(argv[3]), duration = atof(argv[4]);
    FILE *f = fopen(argv[5], "rb");
    if (!f) { perror("messages"); return 1; }
    static unsigned char messages[4096][MSG];
    size_t count = fread(messages, MSG, 4096, f);
    fclose(f);
    if (count == 0) { fprintf(stderr, "no messages\n"); return 1; }
    int nsources = argc - 6;
    int *socks = calloc(nsources, sizeof(int));
    for (int i = 0; i < nsources; i++) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        inet_pton(AF_INET, argv[6 + i], &src.sin_addr);
        socks[i] = socket(AF_INET, SOCK_DGRAM, 0);
        int small = 4096;
        setsockopt(socks[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        if (bind(socks[i], (struct sockaddr *)&src, sizeof src) != 0) { perror("bind"); return 1; }
        if (connect(socks[i], (struct sockaddr *)&target, sizeof target) != 0) {
            perror("connect"); return 1;
        }
    }
    struct mmsghdr vec[BATCH];
    struct iovec iov[BATCH];
    memset(vec, 0, sizeof vec);
    long long sent = 0, errors = 0, next = 0;
    int s = 0;
    double start = now(), t;
    while ((t = now()) - start < duration) {
        long long due = rate > 0 ? (long long)((t - start) * rate) : sent + errors + BATCH;
        if (due <= sent + errors) {
            struct timespec nap = {0, 200000};
            nanosleep(&nap, NULL);
            continue;
        }
        while (sent + errors < due) {
            int n = due - (sent + errors) < BATCH ? (int)(due - (sent + errors)) : BATCH;
            for (int i = 0; i < n; i++) {
                iov[i].iov_base = messages[(next + i) % count];
                iov[i].iov_len = MSG;
                vec[i].msg_hdr.msg_iov = &iov[i];
                vec[i].msg_hdr.msg_iovlen = 1;
            }
            int done = sendmmsg(socks[s], vec, n, 0);
            if (done < 0) { errors += n; done = 0; }
            else { sent += done; errors += n - done; }
            next += n;
            s = (s + 1) % nsources;
        }
    }
    double wall = now() - start;
    printf("{\"sent\": %lld, \"send_errors\": %lld, \"wall_s\": %.3f, \"sent_per_s\": %.1f}\n",
           sent, errors, wall, sent / wall);
    return 0;
}
