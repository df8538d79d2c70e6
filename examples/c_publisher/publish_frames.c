/*
 * A usnst frame publisher in C, written from docs/PROTOCOL.md only: what a simulator team would write.
 *
 *   cc publish_frames.c -o publish_frames $(pkg-config --cflags --libs libzmq msgpack)
 *   ./publish_frames ipc:///tmp/sim 100 256 256     # endpoint to bind, frames, height, width
 *
 * Each frame is a three-part ZeroMQ message on a PUB socket:
 *   1. topic "usnst/frame"
 *   2. a msgpack map: version, seq, capture_ns, width, height, channels, dtype (+ optional meta map)
 *   3. the pixels, row-major, little-endian; here 8-bit grayscale (channels 1, dtype "uint8")
 * Dependencies: libzmq and msgpack-c from the system packages (Debian: libzmq3-dev libmsgpack-dev).
 */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static uint64_t wall_clock_ns(void)
{
    /* capture_ns is nanoseconds since the Unix epoch, comparable between processes on one machine. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pack_key(msgpack_packer *pk, const char *key)
{
    size_t n = strlen(key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, key, n);
}

/* The header map of one frame into sbuf (cleared first). */
static void pack_header(msgpack_sbuffer *sbuf, uint64_t seq, int height, int width)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(sbuf);
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    pack_key(&pk, "version");    msgpack_pack_uint8(&pk, 1);
    pack_key(&pk, "seq");        msgpack_pack_uint64(&pk, seq);
    pack_key(&pk, "capture_ns"); msgpack_pack_uint64(&pk, wall_clock_ns());
    pack_key(&pk, "width");      msgpack_pack_uint32(&pk, (uint32_t)width);
    pack_key(&pk, "height");     msgpack_pack_uint32(&pk, (uint32_t)height);
    pack_key(&pk, "channels");   msgpack_pack_uint8(&pk, 1);
    pack_key(&pk, "dtype");      pack_key(&pk, "uint8");
    pack_key(&pk, "meta");
    msgpack_pack_map(&pk, 1);
    pack_key(&pk, "source");     pack_key(&pk, "c-example");
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s ENDPOINT FRAMES HEIGHT WIDTH\n", argv[0]);
        return 2;
    }
    const char *endpoint = argv[1];
    long frames = atol(argv[2]);
    int height = atoi(argv[3]), width = atoi(argv[4]);
    if (frames < 1 || height < 1 || width < 1) {
        fprintf(stderr, "frames, height and width must be positive\n");
        return 2;
    }

    void *ctx = zmq_ctx_new();
    void *pub = zmq_socket(ctx, ZMQ_PUB);
    if (zmq_bind(pub, endpoint) != 0) {
        fprintf(stderr, "cannot bind %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    struct timespec settle = {0, 500000000}; /* let subscribers connect (ZeroMQ's slow joiner) */
    nanosleep(&settle, NULL);

    uint8_t *pixels = malloc((size_t)height * (size_t)width);
    msgpack_sbuffer header;
    msgpack_sbuffer_init(&header);
    const char topic[] = "usnst/frame";
    struct timespec period = {0, 33333333}; /* 30 frames per second */

    for (long seq = 0; seq < frames; seq++) {
        for (int y = 0; y < height; y++)       /* a moving diagonal gradient */
            for (int x = 0; x < width; x++)
                pixels[(size_t)y * width + x] = (uint8_t)(x + y + 4 * seq);
        pack_header(&header, (uint64_t)seq, height, width);
        if (zmq_send(pub, topic, strlen(topic), ZMQ_SNDMORE) < 0 ||
            zmq_send(pub, header.data, header.size, ZMQ_SNDMORE) < 0 ||
            zmq_send(pub, pixels, (size_t)height * width, 0) < 0) {
            fprintf(stderr, "send failed: %s\n", zmq_strerror(zmq_errno()));
            return 1;
        }
        nanosleep(&period, NULL);
    }
    printf("sent %ld frames of %dx%d to %s\n", frames, height, width, endpoint);

    msgpack_sbuffer_destroy(&header);
    free(pixels);
    int linger = 1000;
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(pub);
    zmq_ctx_term(ctx);
    return 0;
}
