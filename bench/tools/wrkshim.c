/*
 * LD_PRELOAD shim for wrk (which has neither an SNI nor a client-certificate
 * option). Built by bench.py with: cc -shared -fPIC -O2 -o wrkshim.so wrkshim.c -ldl
 *
 *   WRKSHIM_SNI=bench.test       send this SNI instead of the URL's host
 *   WRKSHIM_CERT=client.pem      present this client certificate chain (PEM)
 *   WRKSHIM_KEY=client.key       ... with this private key (PEM)
 *   WRKSHIM_FULL_HANDSHAKE=1     drop the cached session before every connect,
 *                                so that no connection is resumed
 *   WRKSHIM_LOG=1                print one line per SSL_CTX to stderr
 *
 * No OpenSSL headers are needed: the few prototypes and constants used are
 * part of OpenSSL's stable ABI.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct ssl_method_st SSL_METHOD;
typedef struct ssl_session_st SSL_SESSION;

#define SSL_FILETYPE_PEM 1
#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55
#define TLSEXT_NAMETYPE_host_name 0

int SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *file);
int SSL_CTX_use_PrivateKey_file(SSL_CTX *ctx, const char *file, int type);
int SSL_CTX_check_private_key(const SSL_CTX *ctx);
int SSL_set_session(SSL *s, SSL_SESSION *session);
int SSL_in_before(const SSL *s);

SSL_CTX *SSL_CTX_new(const SSL_METHOD *meth) {
    static SSL_CTX *(*real)(const SSL_METHOD *);
    if (!real) real = (SSL_CTX * (*)(const SSL_METHOD *)) dlsym(RTLD_NEXT, "SSL_CTX_new");
    SSL_CTX *ctx = real(meth);
    const char *cert = getenv("WRKSHIM_CERT");
    const char *key = getenv("WRKSHIM_KEY");
    if (ctx && cert && key) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            fprintf(stderr, "wrkshim: cannot load client certificate %s / %s\n", cert, key);
            exit(2);
        }
    }
    if (getenv("WRKSHIM_LOG"))
        fprintf(stderr, "wrkshim: ctx sni=%s cert=%s full_handshake=%s\n",
                getenv("WRKSHIM_SNI") ? getenv("WRKSHIM_SNI") : "(url host)",
                cert ? cert : "(none)", getenv("WRKSHIM_FULL_HANDSHAKE") ? "yes" : "no");
    return ctx;
}

long SSL_ctrl(SSL *s, int cmd, long larg, void *parg) {
    static long (*real)(SSL *, int, long, void *);
    if (!real) real = (long (*)(SSL *, int, long, void *))dlsym(RTLD_NEXT, "SSL_ctrl");
    const char *sni = getenv("WRKSHIM_SNI");
    if (cmd == SSL_CTRL_SET_TLSEXT_HOSTNAME && larg == TLSEXT_NAMETYPE_host_name && sni)
        parg = (void *)sni;
    return real(s, cmd, larg, parg);
}

int SSL_connect(SSL *s) {
    static int (*real)(SSL *);
    if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    /* wrk reuses one SSL object per connection slot (SSL_clear keeps the
     * session, so every reconnect is a resumption). Forget it before a new
     * handshake starts; never in the middle of one. */
    if (getenv("WRKSHIM_FULL_HANDSHAKE") && SSL_in_before(s)) SSL_set_session(s, NULL);
    return real(s);
}
