/*
 * gd_jwks: the one loader of JWK set files (RFC 7517 section 5), shared
 * by the nginx module (guard_jwt_keys, a policy's "auth": {"jwks"}) and
 * guardctl policy check, so that they accept and refuse the same files
 * with the same words.
 *
 * A set is a JSON object with a non-empty "keys" array; every key is
 * imported by gd_jwk_import() (gd_jwk.h), and no two keys share a "kid"
 * (a key without one counts as the kid "").
 */
#ifndef GD_JWKS_H
#define GD_JWKS_H

#include "gd_jwk.h"
#include "gd_policy.h"

#include <stddef.h>

#define GD_JWKS_FINGERPRINT_LEN 32

typedef struct {
    gd_jwk_t *keys; /* each key's kid is its own copy (NUL-terminated) */
    size_t nkeys;
    /* SHA-256 of the set's canonical form (compact, sorted members) */
    unsigned char fingerprint[GD_JWKS_FINGERPRINT_LEN];
} gd_jwks_t;

/*
 * Loads the JWK set in file.  0, or -1 with the reason in err (no file
 * name): "cannot open: No such file or directory", "line 3, column 7:
 * ...", "not a JWKS: no \"keys\" array", "the key set is empty",
 * "keys[1] (kid \"a\"): ...", "keys[2]: duplicate kid \"a\"".  The caller
 * frees *set with gd_jwks_free() in either case.
 */
int gd_jwks_load(const char *file, gd_jwks_t *set, char *err, size_t errlen);
void gd_jwks_free(gd_jwks_t *set);

/*
 * Loads the JWK set a policy names (p->jwks, which must be set).  0, or
 * -1 with one error added to errs, in the form of the policy loader's:
 * "FILE:LINE:COLUMN: /auth/jwks: \"PATH\": reason".
 */
int gd_jwks_policy_load(const gd_policy_t *p, gd_jwks_t *set,
                        gd_errors_t *errs);

/* Loads (and frees) every JWK set of a policy set: the errors added to
 * errs, one per set that fails.  0, or -1 when one failed. */
int gd_policy_set_check_keys(const gd_policy_set_t *set, gd_errors_t *errs);

/* Loads (and frees) the JWK set in file, the guard_jwt_keys file, as the
 * module does: 0, or -1 with the error "guard_jwt_keys \"FILE\": reason"
 * added to errs. */
int gd_jwks_check_file(const char *file, gd_errors_t *errs);

#endif
