#!/usr/bin/python3
"""Independent JWT / JWK tool for the Guard end-to-end tests.

Run with /usr/bin/python3 (needs PyJWT and cryptography, Debian packages
python3-jwt and python3-cryptography).

  jwt_tool.py keys OUTDIR
      Standard key set: for every kid in STANDARD write OUTDIR/<kid>.pem
      (PKCS8 private key), OUTDIR/<kid>.pub.pem (SPKI public key) and
      OUTDIR/<kid>.jwk.json (public JWK); HMAC kids get OUTDIR/<kid>.key
      (raw secret bytes) and OUTDIR/<kid>.jwk.json (oct JWK).  Finally
      OUTDIR/jwks.json = {"keys": [all public JWKs]}.

  jwt_tool.py gen --kty RSA|EC|OKP|oct --kid K --alg A
                  [--bits N] [--crv C] [--size BYTES] OUTDIR
      One key, same per-kid files as above (jwks.json is not touched);
      prints the public JWK on stdout.

  jwt_tool.py mint
      Reads JSON lines from stdin:
        {"alg": "RS256", "key": "/path/to/key.pem", "kid": "rs256",
         "claims": {...}, "header": {...}, "no_kid": false}
      and prints one compact token per line, in input order.  "key" is a
      PEM file (RS*, PS*, ES*, EdDSA) or a raw secret file (HS*); it may
      be omitted for alg "none".  "kid" goes into the header unless
      no_kid is true; "header" fields are merged last (PyJWT semantics:
      "typ": null drops typ, "alg" overrides the signing algorithm).
"""

import argparse
import base64
import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

# kid -> (kty, alg, parameter: RSA bits / EC or OKP curve / oct bytes)
STANDARD = [
    ("rs256", "RSA", "RS256", 2048),
    ("rs384", "RSA", "RS384", 2048),
    ("rs512", "RSA", "RS512", 2048),
    ("ps256", "RSA", "PS256", 2048),
    ("ps384", "RSA", "PS384", 2048),
    ("ps512", "RSA", "PS512", 2048),
    ("es256", "EC", "ES256", "P-256"),
    ("es384", "EC", "ES384", "P-384"),
    ("es512", "EC", "ES512", "P-521"),
    ("ed25519", "OKP", "EdDSA", "Ed25519"),
    ("hs256", "oct", "HS256", 32),
    ("hs384", "oct", "HS384", 48),
    ("hs512", "oct", "HS512", 64),
]

EC_CURVES = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
    "secp256k1": ec.SECP256K1,
}
OKP_CURVES = {
    "Ed25519": ed25519.Ed25519PrivateKey,
    "Ed448": ed448.Ed448PrivateKey,
}


def die(msg):
    print("jwt_tool.py: " + msg, file=sys.stderr)
    sys.exit(1)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def int_bytes(n, length=None):
    """Big-endian unsigned bytes; minimal length unless one is given."""
    if length is None:
        length = max(1, (n.bit_length() + 7) // 8)
    return n.to_bytes(length, "big")


def public_jwk(kty, key, kid, alg):
    """RFC 7517/7518/8037 public JWK for a private key (oct: the secret)."""
    jwk = {"kid": kid, "alg": alg, "use": "sig", "kty": kty}
    if kty == "RSA":
        pub = key.public_key().public_numbers()
        jwk["n"] = b64url(int_bytes(pub.n))
        jwk["e"] = b64url(int_bytes(pub.e))
    elif kty == "EC":
        pub = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8  # P-521 -> 66 bytes
        crv = {v.name: k for k, v in EC_CURVES.items()}[key.curve.name]
        jwk["crv"] = crv
        jwk["x"] = b64url(int_bytes(pub.x, size))
        jwk["y"] = b64url(int_bytes(pub.y, size))
    elif kty == "OKP":
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk["crv"] = ("Ed25519" if isinstance(key, ed25519.Ed25519PrivateKey)
                      else "Ed448")
        jwk["x"] = b64url(raw)
    elif kty == "oct":
        jwk["k"] = b64url(key)
    return jwk


def generate(kty, param):
    if kty == "RSA":
        return rsa.generate_private_key(public_exponent=65537,
                                        key_size=int(param))
    if kty == "EC":
        if param not in EC_CURVES:
            die("unknown EC curve %r" % param)
        return ec.generate_private_key(EC_CURVES[param]())
    if kty == "OKP":
        if param not in OKP_CURVES:
            die("unknown OKP curve %r" % param)
        return OKP_CURVES[param].generate()
    if kty == "oct":
        return os.urandom(int(param))
    die("unknown kty %r" % kty)


def write(path, data):
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(path, mode) as f:
        f.write(data)


def save(outdir, kty, kid, alg, key):
    """Write the per-kid files; return the public JWK."""
    if kty == "oct":
        write(os.path.join(outdir, kid + ".key"), key)
    else:
        write(os.path.join(outdir, kid + ".pem"), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        write(os.path.join(outdir, kid + ".pub.pem"),
              key.public_key().public_bytes(
                  serialization.Encoding.PEM,
                  serialization.PublicFormat.SubjectPublicKeyInfo))
    jwk = public_jwk(kty, key, kid, alg)
    write(os.path.join(outdir, kid + ".jwk.json"),
          json.dumps(jwk, sort_keys=True) + "\n")
    return jwk


def cmd_keys(args):
    os.makedirs(args.outdir, exist_ok=True)
    jwks = [save(args.outdir, kty, kid, alg, generate(kty, param))
            for kid, kty, alg, param in STANDARD]
    write(os.path.join(args.outdir, "jwks.json"),
          json.dumps({"keys": jwks}, sort_keys=True, indent=1) + "\n")


def cmd_gen(args):
    defaults = {"RSA": args.bits, "EC": args.crv or "P-256",
                "OKP": args.crv or "Ed25519", "oct": args.size}
    os.makedirs(args.outdir, exist_ok=True)
    key = generate(args.kty, defaults[args.kty])
    jwk = save(args.outdir, args.kty, args.kid, args.alg, key)
    print(json.dumps(jwk, sort_keys=True))


def cmd_mint(_args):
    out = []
    for lineno, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            spec = json.loads(line)
            alg = spec["alg"]
            headers = {}
            if spec.get("kid") is not None and not spec.get("no_kid"):
                headers["kid"] = spec["kid"]
            headers.update(spec.get("header") or {})
            if spec.get("key") is None:
                key = None if alg == "none" else die("spec %d: no key" % lineno)
            else:
                with open(spec["key"], "rb") as f:
                    key = f.read()
                if not alg.startswith("HS"):
                    key = key.decode("ascii")
            out.append(jwt.encode(spec.get("claims", {}), key, algorithm=alg,
                                  headers=headers or None))
        except SystemExit:
            raise
        except Exception as e:  # PyJWT refusals, bad JSON, missing files
            die("mint spec %d: %s: %s" % (lineno, type(e).__name__, e))
    for token in out:
        print(token)


def main():
    p = argparse.ArgumentParser(description="JWT test tool")
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keys", help="generate the standard key set")
    k.add_argument("outdir")
    g = sub.add_parser("gen", help="generate one key")
    g.add_argument("--kty", required=True, choices=["RSA", "EC", "OKP", "oct"])
    g.add_argument("--kid", required=True)
    g.add_argument("--alg", required=True)
    g.add_argument("--bits", type=int, default=2048)
    g.add_argument("--crv")
    g.add_argument("--size", type=int, default=32)
    g.add_argument("outdir")
    sub.add_parser("mint", help="mint tokens from JSON lines on stdin")
    args = p.parse_args()
    {"keys": cmd_keys, "gen": cmd_gen, "mint": cmd_mint}[args.cmd](args)


if __name__ == "__main__":
    main()
