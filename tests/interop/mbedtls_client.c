/*
 * mbedtls_client: a DTLS 1.2 PSK client on mbedTLS, the TLS stack of Anjay- and
 * Zephyr-based LwM2M devices, for tests/e2e_dtls_mbedtls.rs. It is test code: the gateway
 * never links it. Written against mbedTLS 2.28 (Debian 12's libmbedtls-dev).
 *
 *   mbedtls_client [--suite NAME] [--no-etm] [--resume] HOST PORT IDENTITY HEXKEY HEXMESSAGE
 *
 * Handshakes with PSK IDENTITY/HEXKEY, offering TLS-PSK-WITH-AES-128-CCM-8 and
 * TLS-PSK-WITH-AES-128-CBC-SHA256 (or only the mbedTLS suite NAME given with --suite),
 * answers the server's HelloVerifyRequest (mbedTLS does that itself), sends HEXMESSAGE (a
 * CoAP message) as one record, waits up to RESPONSE_TIMEOUT_MS for one record back, prints
 * it as one hex line on stdout and sends close_notify. --no-etm does not offer
 * encrypt-then-MAC (RFC 7366), as constrained builds without MBEDTLS_SSL_ENCRYPT_THEN_MAC
 * do, so a CBC suite protects records MAC-then-encrypt.
 *
 * --resume: after the first exchange, keeps the session (with the session ticket the
 * server issued, if any), reads the next message as a hex line from stdin, and sends it
 * from a new socket (a new source port, as after a NAT rebinding) over a handshake that
 * offers the saved session; its response is printed as a second hex line.
 *
 * stderr gets one line per connection: whether the handshake was full or abbreviated
 * (resumed: the client never reached ClientKeyExchange), the negotiated suite, whether
 * encrypt-then-MAC is on, and the size of the session ticket the client holds. Any
 * failure exits 1 with mbedTLS's error text on stderr; bad arguments exit 2.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/timing.h>
#include <mbedtls/version.h>

/* Fields read for the report: public in mbedTLS 2.x, private (but present) in 3.x
 * (only 2.28 has been tried). */
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define FIELD(x) MBEDTLS_PRIVATE(x)
#else
#define FIELD(x) x
#endif

/* First handshake retransmission timeout; it doubles up to the max, then the handshake
 * fails: 1 + 2 + 4 s, so a server that never answers (or a wrong key, whose Finished the
 * server drops) fails in about 7 s rather than mbedTLS's default 1 + 2 + ... + 32 s. */
#define HS_TIMEOUT_MIN_MS 1000
#define HS_TIMEOUT_MAX_MS 4000
/* How long to wait for the response to the message sent. */
#define RESPONSE_TIMEOUT_MS 5000
/* Largest CoAP message sent or received: one datagram. */
#define MAX_MESSAGE 2048
/* Longest PSK accepted on the command line. */
#define MAX_PSK 64

static const int default_suites[] = {
    MBEDTLS_TLS_PSK_WITH_AES_128_CCM_8,
    MBEDTLS_TLS_PSK_WITH_AES_128_CBC_SHA256,
    0,
};

struct client {
    mbedtls_net_context net;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_entropy_context entropy;
    mbedtls_timing_delay_context timer;
    mbedtls_ssl_session saved;
};

static void fail(const char *what, int ret)
{
    char text[256];
    mbedtls_strerror(ret, text, sizeof text);
    fprintf(stderr, "mbedtls_client: %s: -0x%04x %s\n", what, (unsigned)-ret, text);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes `hex` into `out` (at most `cap` bytes); returns the length, or -1. */
static long hex_decode(const char *hex, unsigned char *out, size_t cap)
{
    size_t len = strlen(hex);
    while (len > 0 && (hex[len - 1] == '\n' || hex[len - 1] == '\r'))
        len--;
    if (len % 2 != 0 || len / 2 > cap)
        return -1;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return (long)(len / 2);
}

static void print_hex(const unsigned char *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        printf("%02x", data[i]);
    printf("\n");
    fflush(stdout);
}

/* Drives the handshake step by step to see its flights: a full handshake sends a
 * ClientKeyExchange, an abbreviated (resumed) one does not. */
static int handshake(struct client *c, int *full)
{
    *full = 0;
    while (c->ssl.FIELD(state) != MBEDTLS_SSL_HANDSHAKE_OVER) {
        if (c->ssl.FIELD(state) == MBEDTLS_SSL_CLIENT_KEY_EXCHANGE)
            *full = 1;
        int ret = mbedtls_ssl_handshake_step(&c->ssl);
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (ret != 0)
            return ret;
    }
    return 0;
}

/* The line on stderr describing connection `number`'s handshake. */
static void report(const struct client *c, int number, int full)
{
    int etm = 0;
    size_t ticket = 0;
#if defined(MBEDTLS_SSL_ENCRYPT_THEN_MAC)
    etm = c->saved.FIELD(encrypt_then_mac);
#endif
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
    ticket = c->saved.FIELD(ticket_len);
#endif
    fprintf(stderr,
            "mbedtls_client: connection %d: %s handshake, %s, %s, session ticket of %zu bytes\n",
            number, full ? "full" : "abbreviated (resumed)", mbedtls_ssl_get_ciphersuite(&c->ssl),
            etm ? "encrypt-then-MAC" : "no encrypt-then-MAC", ticket);
}

/* One connection from a new socket: handshake (offering the saved session if `resume`),
 * send `msg`, print the response, close_notify. */
static int exchange(struct client *c, const char *host, const char *port, int resume,
                    const unsigned char *msg, size_t msg_len, int number)
{
    unsigned char buf[MAX_MESSAGE];
    int full, ret;

    mbedtls_net_init(&c->net);
    if ((ret = mbedtls_net_connect(&c->net, host, port, MBEDTLS_NET_PROTO_UDP)) != 0) {
        fail("connect", ret);
        return ret;
    }
    if ((ret = mbedtls_ssl_session_reset(&c->ssl)) != 0) {
        fail("session reset", ret);
        goto out;
    }
    mbedtls_ssl_set_bio(&c->ssl, &c->net, mbedtls_net_send, mbedtls_net_recv,
                        mbedtls_net_recv_timeout);
    if (resume && (ret = mbedtls_ssl_set_session(&c->ssl, &c->saved)) != 0) {
        fail("set session", ret);
        goto out;
    }
    if ((ret = handshake(c, &full)) != 0) {
        fail("handshake", ret);
        goto out;
    }
    if ((ret = mbedtls_ssl_get_session(&c->ssl, &c->saved)) != 0) {
        fail("get session", ret);
        goto out;
    }
    report(c, number, full);

    do
        ret = mbedtls_ssl_write(&c->ssl, msg, msg_len);
    while (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE);
    if (ret < 0) {
        fail("write", ret);
        goto out;
    }
    if ((size_t)ret != msg_len) {
        fprintf(stderr, "mbedtls_client: wrote %d of %zu bytes\n", ret, msg_len);
        ret = -1;
        goto out;
    }

    do
        ret = mbedtls_ssl_read(&c->ssl, buf, sizeof buf);
    while (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE);
    if (ret <= 0) {
        fail("read", ret == 0 ? MBEDTLS_ERR_SSL_CONN_EOF : ret);
        ret = ret == 0 ? -1 : ret;
        goto out;
    }
    print_hex(buf, (size_t)ret);

    do
        ret = mbedtls_ssl_close_notify(&c->ssl);
    while (ret == MBEDTLS_ERR_SSL_WANT_WRITE);
    if (ret != 0)
        fail("close_notify", ret);
out:
    mbedtls_net_free(&c->net);
    return ret;
}

static int usage(void)
{
    fprintf(stderr, "usage: mbedtls_client [--suite NAME] [--no-etm] [--resume] "
                    "HOST PORT IDENTITY HEXKEY HEXMESSAGE\n");
    return 2;
}

int main(int argc, char **argv)
{
    int suites[2] = {0, 0};
    const int *offered = default_suites;
    int resume = 0, etm = 1, arg = 1, ret, status = 1;

    for (; arg < argc && strncmp(argv[arg], "--", 2) == 0; arg++) {
        if (strcmp(argv[arg], "--resume") == 0) {
            resume = 1;
        } else if (strcmp(argv[arg], "--no-etm") == 0) {
            etm = 0;
        } else if (strcmp(argv[arg], "--suite") == 0 && arg + 1 < argc) {
            suites[0] = mbedtls_ssl_get_ciphersuite_id(argv[++arg]);
            if (suites[0] == 0) {
                fprintf(stderr, "mbedtls_client: unknown suite %s\n", argv[arg]);
                return 2;
            }
            offered = suites;
        } else {
            return usage();
        }
    }
    if (argc - arg != 5)
        return usage();
    const char *host = argv[arg], *port = argv[arg + 1], *identity = argv[arg + 2];

    unsigned char psk[MAX_PSK], msg[MAX_MESSAGE];
    long psk_len = hex_decode(argv[arg + 3], psk, sizeof psk);
    long msg_len = hex_decode(argv[arg + 4], msg, sizeof msg);
    if (psk_len <= 0 || msg_len <= 0) {
        fprintf(stderr, "mbedtls_client: HEXKEY and HEXMESSAGE must be non-empty hex\n");
        return 2;
    }

    struct client c;
    mbedtls_ssl_init(&c.ssl);
    mbedtls_ssl_config_init(&c.conf);
    mbedtls_ctr_drbg_init(&c.drbg);
    mbedtls_entropy_init(&c.entropy);
    mbedtls_ssl_session_init(&c.saved);

    static const char pers[] = "lwm2m-gateway mbedtls_client";
    if ((ret = mbedtls_ctr_drbg_seed(&c.drbg, mbedtls_entropy_func, &c.entropy,
                                     (const unsigned char *)pers, sizeof pers - 1)) != 0) {
        fail("seed", ret);
        goto out;
    }
    if ((ret = mbedtls_ssl_config_defaults(&c.conf, MBEDTLS_SSL_IS_CLIENT,
                                           MBEDTLS_SSL_TRANSPORT_DATAGRAM,
                                           MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
        fail("config", ret);
        goto out;
    }
    mbedtls_ssl_conf_rng(&c.conf, mbedtls_ctr_drbg_random, &c.drbg);
    mbedtls_ssl_conf_min_version(&c.conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(&c.conf, offered);
    mbedtls_ssl_conf_handshake_timeout(&c.conf, HS_TIMEOUT_MIN_MS, HS_TIMEOUT_MAX_MS);
    mbedtls_ssl_conf_read_timeout(&c.conf, RESPONSE_TIMEOUT_MS);
#if defined(MBEDTLS_SSL_ENCRYPT_THEN_MAC)
    mbedtls_ssl_conf_encrypt_then_mac(&c.conf, etm ? MBEDTLS_SSL_ETM_ENABLED
                                                   : MBEDTLS_SSL_ETM_DISABLED);
#else
    (void)etm;
#endif
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
    mbedtls_ssl_conf_session_tickets(&c.conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
#endif
    if ((ret = mbedtls_ssl_conf_psk(&c.conf, psk, (size_t)psk_len,
                                    (const unsigned char *)identity, strlen(identity))) != 0) {
        fail("psk", ret);
        goto out;
    }
    if ((ret = mbedtls_ssl_setup(&c.ssl, &c.conf)) != 0) {
        fail("setup", ret);
        goto out;
    }
    mbedtls_ssl_set_timer_cb(&c.ssl, &c.timer, mbedtls_timing_set_delay,
                             mbedtls_timing_get_delay);

    if (exchange(&c, host, port, 0, msg, (size_t)msg_len, 1) != 0)
        goto out;
    if (resume) {
        char line[2 * MAX_MESSAGE + 4];
        if (fgets(line, sizeof line, stdin) == NULL ||
            (msg_len = hex_decode(line, msg, sizeof msg)) <= 0) {
            fprintf(stderr, "mbedtls_client: --resume: no hex message on stdin\n");
            goto out;
        }
        if (exchange(&c, host, port, 1, msg, (size_t)msg_len, 2) != 0)
            goto out;
    }
    status = 0;
out:
    mbedtls_ssl_session_free(&c.saved);
    mbedtls_ssl_free(&c.ssl);
    mbedtls_ssl_config_free(&c.conf);
    mbedtls_ctr_drbg_free(&c.drbg);
    mbedtls_entropy_free(&c.entropy);
    return status;
}
