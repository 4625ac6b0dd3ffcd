/* t_jwk: public JWKs imported as OpenSSL keys, and the refusals */
#include "gd_jwk.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

/* a JWK member: bytes as unpadded base64url (OpenSSL's base64, mapped) */
static void set_b64(json_t *jwk, const char *name, const unsigned char *p,
                    size_t len)
{
    char *text = malloc(len * 4 / 3 + 8);
    int n = EVP_EncodeBlock((unsigned char *)text, p, (int)len);

    while (n > 0 && text[n - 1] == '=') {
        n--;
    }
    text[n] = '\0';
    for (char *c = text; *c; c++) {
        *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
    }
    json_object_set_new(jwk, name, json_string(text));
    free(text);
}

static void set_bn(json_t *jwk, const char *name, EVP_PKEY *pkey,
                   const char *param, int size)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    int len;

    EVP_PKEY_get_bn_param(pkey, param, &bn);
    len = size ? BN_bn2binpad(bn, buf, size) : BN_bn2bin(bn, buf);
    set_b64(jwk, name, buf, (size_t)len);
    BN_free(bn);
}

static const char *import(json_t *jwk, gd_jwk_t *key)
{
    const char *err = gd_jwk_import(jwk, key);
    return err ? err : "";
}

int main(void)
{
    gd_jwk_t key;
    const char *err;

    /* EC */
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    json_t *jwk = json_pack("{s:s, s:s, s:s, s:s}", "kid", "e1", "kty", "EC",
                            "alg", "ES256", "crv", "P-256");
    set_bn(jwk, "x", ec, OSSL_PKEY_PARAM_EC_PUB_X, 32);
    set_bn(jwk, "y", ec, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    err = import(jwk, &key);
    TAP_OK(*err == 0 && EVP_PKEY_eq(key.pkey, ec) == 1,
           "an ES256 JWK is its EC key");
    TAP_OK(key.kid_len == 2 && memcmp(key.kid, "e1", 2) == 0 &&
               strcmp(key.alg->name, "ES256") == 0,
           "with its kid and alg");
    gd_jwk_free(&key);

    json_object_set_new(jwk, "alg", json_string("ES384"));
    err = import(jwk, &key);
    TAP_OK(strstr(err, "\"crv\" does not fit \"alg\"") != NULL, "%s", err);
    TAP_OK(key.kid != NULL, "the kid is known for the message");
    gd_jwk_free(&key);

    json_object_set_new(jwk, "alg", json_string("ES256"));
    set_bn(jwk, "d", ec, OSSL_PKEY_PARAM_PRIV_KEY, 32);
    err = import(jwk, &key);
    TAP_OK(strstr(err, "private key material") != NULL, "%s", err);
    gd_jwk_free(&key);
    json_object_del(jwk, "d");

    json_object_set_new(jwk, "y", json_string("AAAA"));
    err = import(jwk, &key);
    TAP_OK(strstr(err, "wrong length") != NULL, "%s", err);
    gd_jwk_free(&key);

    json_object_set_new(jwk, "y", json_string("A=="));
    err = import(jwk, &key);
    TAP_OK(strstr(err, "base64url") != NULL, "%s", err);
    gd_jwk_free(&key);
    json_decref(jwk);
    EVP_PKEY_free(ec);

    /* RSA */
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    jwk = json_pack("{s:s, s:s, s:s, s:s}", "kid", "r1", "kty", "RSA", "alg",
                    "PS256", "use", "sig");
    set_bn(jwk, "n", rsa, OSSL_PKEY_PARAM_RSA_N, 0);
    set_bn(jwk, "e", rsa, OSSL_PKEY_PARAM_RSA_E, 0);
    err = import(jwk, &key);
    TAP_OK(*err == 0 && EVP_PKEY_eq(key.pkey, rsa) == 1,
           "a PS256 JWK is its RSA key");
    gd_jwk_free(&key);

    json_object_set_new(jwk, "use", json_string("enc"));
    err = import(jwk, &key);
    TAP_OK(strcmp(err, "\"use\" is not \"sig\"") == 0, "%s", err);
    gd_jwk_free(&key);
    json_object_del(jwk, "use");

    json_object_set_new(jwk, "key_ops", json_pack("[s]", "sign"));
    err = import(jwk, &key);
    TAP_OK(strstr(err, "does not allow \"verify\"") != NULL, "%s", err);
    gd_jwk_free(&key);
    json_object_del(jwk, "key_ops");

    json_object_set_new(jwk, "alg", json_string("ES256"));
    err = import(jwk, &key);
    TAP_OK(strcmp(err, "\"alg\" does not fit \"kty\"") == 0, "%s", err);
    gd_jwk_free(&key);
    json_decref(jwk);
    EVP_PKEY_free(rsa);

    rsa = EVP_RSA_gen(1024);
    jwk = json_pack("{s:s, s:s, s:s}", "kid", "weak", "kty", "RSA", "alg",
                    "RS256");
    set_bn(jwk, "n", rsa, OSSL_PKEY_PARAM_RSA_N, 0);
    set_bn(jwk, "e", rsa, OSSL_PKEY_PARAM_RSA_E, 0);
    err = import(jwk, &key);
    TAP_OK(strcmp(err, "RSA key shorter than 2048 bits") == 0, "%s", err);
    gd_jwk_free(&key);
    json_decref(jwk);
    EVP_PKEY_free(rsa);

    /* OKP and oct */
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    unsigned char raw[32];
    size_t rawlen = sizeof(raw);
    EVP_PKEY_get_raw_public_key(ed, raw, &rawlen);
    jwk = json_pack("{s:s, s:s, s:s, s:s}", "kid", "d1", "kty", "OKP", "alg",
                    "EdDSA", "crv", "Ed25519");
    set_b64(jwk, "x", raw, rawlen);
    err = import(jwk, &key);
    TAP_OK(*err == 0 && EVP_PKEY_eq(key.pkey, ed) == 1,
           "an EdDSA JWK is its Ed25519 key");
    gd_jwk_free(&key);
    json_decref(jwk);
    EVP_PKEY_free(ed);

    memset(raw, 7, sizeof(raw));
    jwk =
        json_pack("{s:s, s:s, s:s}", "kid", "h1", "kty", "oct", "alg", "HS256");
    set_b64(jwk, "k", raw, 32);
    err = import(jwk, &key);
    TAP_OK(*err == 0 && key.secret_len == 32 && key.secret[0] == 7,
           "an HS256 JWK is its secret");
    gd_jwk_free(&key);
    json_object_set_new(jwk, "alg", json_string("HS384"));
    err = import(jwk, &key);
    TAP_OK(strstr(err, "shorter than the hash output") != NULL, "%s", err);
    gd_jwk_free(&key);
    json_object_set_new(jwk, "alg", json_string("none"));
    err = import(jwk, &key);
    TAP_OK(strncmp(err, "unsupported \"alg\"", 17) == 0, "%s", err);
    gd_jwk_free(&key);
    json_object_del(jwk, "alg");
    err = import(jwk, &key);
    TAP_OK(strstr(err, "every key must pin its algorithm") != NULL, "%s", err);
    gd_jwk_free(&key);
    json_object_del(jwk, "kid");
    err = import(jwk, &key);
    TAP_OK(strcmp(err, "no \"kid\"") == 0 && key.kid == NULL, "%s", err);
    gd_jwk_free(&key);
    json_decref(jwk);

    TAP_OK(gd_jwk_alg("EdDSA", 5) != NULL && gd_jwk_alg("EdDSA", 4) == NULL,
           "algorithms by name and length");
    TAP_OK(gd_jwk_ec_curve("P-521") != NULL &&
               gd_jwk_ec_curve("P-521")->coord_len == 66 &&
               gd_jwk_ec_curve("P-192") == NULL,
           "curves by JWK name");

    return tap_done();
}
