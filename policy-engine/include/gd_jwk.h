/*
 * gd_jwk: one JSON Web Key (RFC 7517) as an OpenSSL key, for verifying
 * JWS signatures (RFC 7518).
 *
 * Every key pins its algorithm: "alg" is required and must fit "kty" (and
 * "crv"); "use", when present, is "sig"; "key_ops", when present, allows
 * "verify"; a public key set holds no private member.  Base64url members
 * are canonical (gd_b64url_decode()).  RSA keys have 2048 bits or more, EC
 * points lie on their curve, oct secrets are at least as long as the hash
 * output of their algorithm.
 *
 * The nginx module imports its guard_jwt_keys with gd_jwk_import(); the
 * error texts are the ones its configuration errors show.
 */
#ifndef GD_JWK_H
#define GD_JWK_H

#include <jansson.h>
#include <stddef.h>

#include <openssl/evp.h>

typedef enum {
    GD_JWK_HS = 0,
    GD_JWK_RS,
    GD_JWK_PS,
    GD_JWK_ES,
    GD_JWK_EDDSA
} gd_jwk_family_t;

/* a JWS algorithm and the keys it takes */
typedef struct {
    const char *name; /* "RS256" */
    gd_jwk_family_t family;
    const char *md; /* the digest's OpenSSL name, NULL for EdDSA */
    size_t hash_len;
    const char *kty;
    const char *crv;   /* JWK curve name (ES, EdDSA) */
    const char *group; /* OpenSSL group name (ES) */
    size_t coord_len;  /* bytes of a coordinate (ES, EdDSA) */
} gd_jwk_alg_t;

#define GD_JWK_RSA_MIN_BITS 2048

/* an imported key */
typedef struct {
    const gd_jwk_alg_t *alg;
    const char *kid; /* in the JSON: valid while it lives; NULL: none yet */
    size_t kid_len;
    EVP_PKEY *pkey;        /* RS, PS, ES, EdDSA */
    unsigned char *secret; /* HS, malloc()ed */
    size_t secret_len;
} gd_jwk_t;

/* The algorithm called name (len bytes), or NULL. */
const gd_jwk_alg_t *gd_jwk_alg(const char *name, size_t len);

/*
 * Imports jwk, a public verification key.  NULL on success, else a fixed
 * error text; either way key->kid is set as soon as it is known (for the
 * caller's message), and the caller frees the key with gd_jwk_free().
 */
const char *gd_jwk_import(const json_t *jwk, gd_jwk_t *key);

/* Frees what gd_jwk_import() made (the secret is cleansed first). */
void gd_jwk_free(gd_jwk_t *key);

/*
 * The OpenSSL key of an RSA JWK's members, decoded (big-endian): n and e
 * (nmembers 2, a public key), then d, p, q, dp, dq and qi (nmembers 8, a
 * key pair).  0, or -1 when OpenSSL does not take them (*pkey NULL).  The
 * caller checks the key further as it needs.
 */
int gd_jwk_rsa_pkey(const unsigned char *const member[], const size_t len[],
                    size_t nmembers, EVP_PKEY **pkey);

/*
 * The OpenSSL key of an EC JWK on group (OpenSSL's group name): x and y of
 * size bytes each, and d (dlen bytes) for a key pair, NULL for a public
 * key.  0, or -1 (*pkey NULL).
 */
int gd_jwk_ec_pkey(const char *group, const unsigned char *x,
                   const unsigned char *y, size_t size, const unsigned char *d,
                   size_t dlen, EVP_PKEY **pkey);

/* The ES algorithm of a JWK curve name ("P-256"...), or NULL. */
const gd_jwk_alg_t *gd_jwk_ec_curve(const char *crv);

#endif
